"""The SQLite store: one file, WAL, a numbered schema the program migrates itself.

Every statement runs on one dedicated thread (``_call``: the single hop from
the event loop), so the loop never waits on the disk and the connection is
only ever used by the thread that owns it. A method whose statements must
hold together runs them as one function on that thread, inside
``BEGIN IMMEDIATE … COMMIT``, so no other statement can come in between.

SQLite serves one process: a stop request reaches this process's listeners
directly, and answers left ``generating`` by a previous run are marked
``interrupted`` when the store opens.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from h2ochat.server.storage import (
    DELETE_SUBTREE,
    HAS_CHILDREN,
    ORPHANS,
    SELECT_CONVERSATION,
    SELECT_MESSAGE,
    SELECT_TREE,
    SUBTREE,
    Conversation,
    ConversationGone,
    MessageIdTaken,
    MessageRow,
    NewConversation,
    Session,
    SessionGone,
    StopListener,
    StoreOptions,
    TooManyConversations,
    TooManyMessages,
    like_pattern,
    now,
    tree_of,
)
from h2ochat.server.storage.sqlite_devices import SQLiteDevices, forget_devices, move_devices
from h2ochat.server.storage.sqlite_people import SQLitePeople, forget_usage, keep_people_seen
from h2ochat.server.storage.sqlite_portability import SQLitePortability
from h2ochat.server.storage.sqlite_runs import SQLiteRuns
from h2ochat.server.storage.sqlite_schema import migrate, transaction, use_wal
from h2ochat.server.storage.sqlite_shares import SQLiteShares, forget_shares
from h2ochat.server.storage.sqlite_web_searches import SQLiteWebSearches

__all__ = ["SQLiteStore"]

# An answer is continued only while nothing follows it, and by one request at a time.
_RESUME = (
    "UPDATE messages SET status = 'generating', finish_reason = NULL, interruption = NULL, updated_at = ? "
    "WHERE conversation_id = ? AND id = ? AND role = 'assistant' AND status <> 'generating' "
    f"AND NOT {HAS_CHILDREN}"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_id, id, parent_id, position, role, content, status, created_at, updated_at, "
    "left_out) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

T = TypeVar("T")
Row = tuple[Any, ...]
Values = tuple[Any, ...] | dict[str, Any]  # for ? or :name placeholders


class SQLiteStore(SQLiteRuns, SQLiteShares, SQLitePortability, SQLiteDevices, SQLiteWebSearches, SQLitePeople):
    """:class:`~h2ochat.server.storage.Store` on SQLite. Open with ``await SQLiteStore.open(path)``."""

    def __init__(self, path: str, options: StoreOptions) -> None:
        self.path = path
        self.options = options
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h2ochat-db")
        self._db: sqlite3.Connection | None = None
        self._stop_listeners: list[StopListener] = []
        self.statements = 0

    @classmethod
    async def open(cls, path: str, options: StoreOptions | None = None) -> SQLiteStore:
        store = cls(path, options or StoreOptions())
        try:
            await store._hop(store._open)
        except BaseException:
            await store.close()  # a half-opened connection must not be left to the garbage collector
            raise
        return store

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await self._hop(db.close)
        self._executor.shutdown(wait=True)

    async def _hop(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function(connection)`` on the database thread: the one way in."""
        return await self._hop(lambda: function(self._connection()))

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the store is closed")
        return self._db

    async def _execute(self, sql: str, parameters: Values) -> int:
        return await self._call(lambda db: db.execute(sql, parameters).rowcount)

    async def _one(self, sql: str, parameters: Row) -> Row | None:
        row: Row | None = await self._call(lambda db: db.execute(sql, parameters).fetchone())
        return row

    async def _all(self, sql: str, parameters: Row) -> list[Row]:
        return await self._call(lambda db: db.execute(sql, parameters).fetchall())

    def _traced(self, _statement: str) -> None:
        self.statements += 1  # on the database thread, the only one that runs statements

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db = db
        db.set_trace_callback(self._traced)
        use_wal(db)
        # NORMAL in WAL mode survives a killed process (only a power cut may lose
        # the last commits), at a fraction of the cost of FULL.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 5000")
        migrate(db, self.options.preprompts)
        with transaction(db):
            db.execute(
                "UPDATE messages SET status = 'interrupted', interruption = 'server stopped', updated_at = ? "
                "WHERE status = 'generating'",
                (now(),),
            )

    async def upkeep(self) -> None:
        # One process, one clock: every time here is this process's (PostgreSQL's are the database's).
        cutoff, orphaned = now(self.options.session_idle), now(self.options.orphan_ttl)

        def expire(db: sqlite3.Connection) -> None:
            with transaction(db):
                keep_people_seen(db, now(self.options.session_idle / 2))
                forget_usage(db, cutoff)
                forget_shares(db, cutoff)
                forget_devices(db, cutoff)
                db.execute(
                    "DELETE FROM conversations WHERE session_id IN (SELECT id FROM sessions WHERE seen_at < ?)",
                    (cutoff,),
                )
                db.execute("DELETE FROM sessions WHERE seen_at < ?", (cutoff,))
                db.execute(ORPHANS.format(cutoff="?"), (orphaned,))
                db.execute("DELETE FROM rate_events WHERE at < ?", (time.time() - 60,))
                self._compact_runs(db)

        await self._call(expire)

    # Sessions -----------------------------------------------------------------------------

    async def new_session(self) -> str:
        session_id = secrets.token_urlsafe(32)
        stamp = now()
        await self._execute(
            "INSERT INTO sessions (id, created_at, updated_at, seen_at) VALUES (?, ?, ?, ?)",
            (session_id, stamp, stamp, stamp),
        )
        return session_id

    async def session(self, session_id: str) -> Session | None:
        row = await self._call(lambda db: self._live(db, session_id))
        return None if row is None else Session(row[0], row[1], bool(row[2]), row[3], bool(row[5]))

    def _live(self, db: sqlite3.Connection, session_id: str, *, accepted: bool = False) -> Row | None:
        """The session's row if it is live (with ``accepted``: and past the welcome gate), its use
        recorded; on the database thread, so that a request's first step checks it in the same hop."""
        row: Row | None = db.execute(
            "SELECT id, active_model, share_conversations, ethics_accepted_at, seen_at, search_enabled FROM sessions "
            "WHERE id = ? AND seen_at >= ?",
            (session_id, now(self.options.session_idle)),
        ).fetchone()
        if row is None or (accepted and row[3] is None):
            return None
        if row[4] < now(self.options.touch_after):  # a read mostly stays a read
            db.execute("UPDATE sessions SET seen_at = ? WHERE id = ?", (now(), session_id))
        return row

    async def renew_session(self, session_id: str) -> str:
        fresh = secrets.token_urlsafe(32)

        def move(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute("UPDATE sessions SET id = ?, seen_at = ? WHERE id = ?", (fresh, now(), session_id))
                db.execute("UPDATE conversations SET session_id = ? WHERE session_id = ?", (fresh, session_id))
                db.execute("UPDATE shares SET session_id = ? WHERE session_id = ?", (fresh, session_id))
                db.execute("UPDATE web_searches SET session_id = ? WHERE session_id = ?", (fresh, session_id))
                move_devices(db, fresh, session_id)
                db.execute("UPDATE people SET session_id = ? WHERE session_id = ?", (fresh, session_id))
                db.execute("UPDATE usage SET session_id = ? WHERE session_id = ?", (fresh, session_id))

        await self._call(move)
        return fresh

    async def save_settings(
        self, session_id: str, active_model: str | None, share: bool, accepted: bool, search: bool | None = None
    ) -> str:
        session_id = session_id or secrets.token_urlsafe(32)  # a new session: the upsert inserts it
        stamp = now()
        await self._execute(
            """
            INSERT INTO sessions (id, active_model, share_conversations, ethics_accepted_at, created_at, updated_at,
                                  seen_at, search_enabled)
            VALUES (:id, :model, :share, :accepted, :stamp, :stamp, :stamp, coalesce(:search, 0))
            ON CONFLICT (id) DO UPDATE SET
                active_model = coalesce(:model, active_model),
                share_conversations = :share,
                search_enabled = coalesce(:search, search_enabled),
                ethics_accepted_at = coalesce(ethics_accepted_at, :accepted),
                updated_at = :stamp,
                seen_at = :stamp
            """,
            {
                "id": session_id,
                "model": active_model,
                "share": int(share),
                "search": None if search is None else int(search),
                "accepted": stamp if accepted else None,
                "stamp": stamp,
            },
        )
        return session_id

    async def admit(self, bucket: str, per_minute: int) -> float:
        def count(db: sqlite3.Connection) -> float:
            with transaction(db):
                moment = time.time()  # taken under the write lock: no later entry can be older
                db.execute("DELETE FROM rate_events WHERE bucket = ? AND at <= ?", (bucket, moment - 60))
                used, oldest = db.execute(
                    "SELECT count(*), min(at) FROM rate_events WHERE bucket = ?", (bucket,)
                ).fetchone()
                if used >= per_minute:
                    return min(60.0, max(0.001, float(oldest) + 60 - moment))
                db.execute("INSERT INTO rate_events (bucket, at) VALUES (?, ?)", (bucket, moment))
                return 0.0

        return await self._call(count)

    # Conversations ------------------------------------------------------------------------

    async def create_conversation(
        self, session_id: str, model: str, limit: int = 0, *, preprompt: str = ""
    ) -> NewConversation:
        ids = (secrets.token_hex(12), session_id, str(uuid.uuid4()))
        created = NewConversation.stored(ids, model, preprompt, now())
        stamp, root_id = created.root.created_at, created.root.id

        def create(db: sqlite3.Connection) -> None:
            with transaction(db):
                if self._live(db, session_id) is None:
                    raise SessionGone("This session is not one the server issued, or it expired")
                if limit:
                    (count,) = db.execute(
                        "SELECT count(*) FROM conversations WHERE session_id = ?", (session_id,)
                    ).fetchone()
                    if count >= limit:
                        raise TooManyConversations(limit)
                db.execute(
                    "INSERT INTO conversations (id, session_id, model, created_at, updated_at, root_id, active_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (created.id, session_id, model, stamp, stamp, root_id, root_id),
                )
                root = (created.id, root_id, None, 0, "system", preprompt, "done", stamp, stamp, 0)
                db.execute(_INSERT_MESSAGE, root)

        await self._call(create)
        return created

    async def conversation(self, conversation_id: str, session_id: str) -> Conversation | None:
        row = await self._one(f"{SELECT_CONVERSATION} WHERE id = ? AND session_id = ?", (conversation_id, session_id))
        return None if row is None else Conversation.from_row(row)

    async def conversation_with_messages(
        self, conversation_id: str, session_id: str, *, accepted: bool = False
    ) -> tuple[Conversation, list[MessageRow]] | None:
        def read(db: sqlite3.Connection) -> list[Row]:
            if self._live(db, session_id, accepted=accepted) is None:
                return []
            return db.execute(SELECT_TREE.format(c="?", s="?"), (conversation_id, session_id)).fetchall()

        return tree_of(await self._call(read))

    async def conversations(self, session_id: str) -> list[Conversation]:
        rows = await self._all(f"{SELECT_CONVERSATION} WHERE session_id = ? ORDER BY updated_at DESC", (session_id,))
        return [Conversation.from_row(row) for row in rows]

    async def search_conversations(self, session_id: str, query: str) -> list[Conversation]:
        pattern = like_pattern(query)  # LIKE folds ASCII letters only, as the interface says
        rows = await self._all(
            f"{SELECT_CONVERSATION} AS c WHERE session_id = ? AND (title LIKE ? ESCAPE '\\' OR EXISTS "
            "(SELECT 1 FROM messages WHERE conversation_id = c.id AND content LIKE ? ESCAPE '\\')) "
            "ORDER BY updated_at DESC",
            (session_id, pattern, pattern),
        )
        return [Conversation.from_row(row) for row in rows]

    async def delete_conversation(self, conversation_id: str, session_id: str, *, stop: str = "") -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            if self._live(db, session_id) is None:
                return False
            sql = "DELETE FROM conversations WHERE id = ? AND session_id = ?"
            return db.execute(sql, (conversation_id, session_id)).rowcount > 0

        deleted = await self._call(delete)
        if deleted and stop:
            await self.request_stop(conversation_id, stop)
        return deleted

    async def rename_conversation(
        self, conversation_id: str, session_id: str, title: str, *, only_if: str | None = None
    ) -> bool:
        # updated_at stays: it orders the sidebar by the last message, and a new name is no news.
        sql = "UPDATE conversations SET title = ? WHERE id = ? AND session_id = ?"
        values: tuple[str, ...] = (title, conversation_id, session_id)
        if only_if is not None:
            sql, values = sql + " AND title = ?", (*values, only_if)
        return await self._execute(sql, values) > 0

    async def save_conversation_settings(
        self, conversation_id: str, session_id: str, settings: Mapping[str, Any]
    ) -> bool:
        sql = "UPDATE conversations SET settings = ? WHERE id = ? AND session_id = ?"
        return await self._execute(sql, (json.dumps(dict(settings)), conversation_id, session_id)) > 0

    # Messages -----------------------------------------------------------------------------

    async def messages(self, conversation_id: str) -> list[MessageRow]:
        rows = await self._all(f"{SELECT_MESSAGE} WHERE conversation_id = ? ORDER BY position", (conversation_id,))
        return [MessageRow(*row) for row in rows]

    async def begin_exchange(
        self,
        conversation_id: str,
        parent_id: str,
        user: tuple[str, str] | None,
        answer_id: str,
        *,
        left_out: int = 0,
        limit: int = 0,
    ) -> None:
        stamp = now()

        def begin(db: sqlite3.Connection) -> None:
            with transaction(db):
                count, position, parent = db.execute(
                    "SELECT count(*), coalesce(max(position) + 1, 0), sum(id = ?) FROM messages "
                    "WHERE conversation_id = ?",
                    (parent_id, conversation_id),
                ).fetchone()
                if not parent:  # the conversation, or the message this one follows, was deleted meanwhile
                    raise ConversationGone("The conversation or the message this one follows was deleted meanwhile")
                rows = [(conversation_id, answer_id, parent_id, position, "assistant", "", "generating", left_out)]
                if user is not None:
                    user_id, inputs = user
                    rows = [
                        (conversation_id, user_id, parent_id, position, "user", inputs, "done", 0),
                        (conversation_id, answer_id, user_id, position + 1, "assistant", "", "generating", left_out),
                    ]
                if limit and count + len(rows) > limit:
                    raise TooManyMessages(limit)
                try:
                    db.executemany(_INSERT_MESSAGE, [(*row[:7], stamp, stamp, row[7]) for row in rows])
                except sqlite3.IntegrityError:
                    raise MessageIdTaken(
                        "Another request stored a message with this options.id or response_id first; send new ids"
                    ) from None
                db.execute(
                    "UPDATE conversations SET updated_at = ?, active_id = ? WHERE id = ?",
                    (stamp, answer_id, conversation_id),
                )

        await self._call(begin)

    async def resume_answer(self, conversation_id: str, answer_id: str) -> bool:
        return await self._execute(_RESUME, (now(), conversation_id, answer_id)) > 0

    async def set_active(self, conversation_id: str, leaf_id: str) -> bool:
        sql = (
            "UPDATE conversations SET active_id = ? WHERE id = ? "
            "AND EXISTS (SELECT 1 FROM messages WHERE conversation_id = ? AND id = ?)"
        )
        return await self._execute(sql, (leaf_id, conversation_id, conversation_id, leaf_id)) > 0

    async def delete_message(self, conversation_id: str, message_id: str, active_id: str) -> int:
        def delete(db: sqlite3.Connection) -> int:
            with transaction(db):
                values = {"conversation": conversation_id, "message": message_id}
                sql = f"WITH RECURSIVE {SUBTREE} {DELETE_SUBTREE}".format(c=":conversation", m=":message")
                # Counted from RETURNING: sqlite3 reports no rowcount for a statement that starts with WITH.
                deleted = len(db.execute(f"{sql} RETURNING id", values).fetchall())
                if deleted:
                    db.execute("UPDATE conversations SET active_id = ? WHERE id = ?", (active_id, conversation_id))
                return deleted

        return await self._call(delete)

    async def set_preprompt(self, conversation_id: str, preprompt: str) -> None:
        sql = "UPDATE messages SET content = ?, updated_at = ? WHERE conversation_id = ? AND parent_id IS NULL"
        await self._execute(sql, (preprompt, now(), conversation_id))

    async def vote(self, conversation_id: str, message_id: str, score: int) -> bool:
        sql = "UPDATE messages SET score = ? WHERE conversation_id = ? AND id = ? AND role = 'assistant'"
        return await self._execute(sql, (score, conversation_id, message_id)) > 0

    async def save_partial(self, conversation_id: str, answer_id: str, content: str, generated_tokens: int) -> None:
        await self._execute(
            "UPDATE messages SET content = ?, generated_tokens = ?, updated_at = ? "
            "WHERE conversation_id = ? AND id = ? AND status = 'generating'",
            (content, generated_tokens, now(), conversation_id, answer_id),
        )

    async def finish_answer(
        self,
        conversation_id: str,
        answer_id: str,
        content: str,
        *,
        finish_reason: str | None,
        interruption: str | None,
        generated_tokens: int,
    ) -> None:
        status = "interrupted" if interruption else "done"
        await self._execute(
            "UPDATE messages SET content = ?, status = ?, finish_reason = ?, interruption = ?, "
            "generated_tokens = ?, updated_at = ? WHERE conversation_id = ? AND id = ?",
            (content, status, finish_reason, interruption, generated_tokens, now(), conversation_id, answer_id),
        )

    # Stopping -----------------------------------------------------------------------------

    def on_stop(self, listener: StopListener) -> None:
        self._stop_listeners.append(listener)

    async def request_stop(self, conversation_id: str, reason: str) -> None:
        for listener in self._stop_listeners:
            listener(conversation_id, reason)
