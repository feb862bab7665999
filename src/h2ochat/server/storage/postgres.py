"""The PostgreSQL store: several replicas of the server on one database, through an asyncpg pool.

What SQLite gets from being one process, PostgreSQL gets from the database:

- statements that must hold together lock what they count or extend (the
  conversation row before positions are taken, the session row before its
  conversations are counted, an advisory lock per rate-limit bucket), so two
  replicas cannot both take the last place; those steps are PL/pgSQL functions
  (:mod:`.postgres_schema`), so that each is one round trip and counts once the lock is held;
- migrations run under an advisory lock, so replicas starting together apply
  each one once;
- a stop request is a ``NOTIFY`` that every replica ``LISTEN``\\s to on a
  connection of its own, reconnected when the database comes back;
- every replica renews a lease (``replicas.seen_at``) in :meth:`upkeep`; the
  answers a replica generates carry its id, and any replica marks those of a
  replica whose lease ran out ``interrupted``, keeping the text saved last;
- every time stored or compared is the database's (``now()``), never a
  replica's own clock: with replicas' clocks 10 s apart, a lease written by one
  and read by another would otherwise run out 10 s early, and that replica's
  live answers be marked interrupted.

A database that cannot be reached raises :class:`StoreUnavailable` within
seconds (connect, acquire and command timeouts); the pool replaces broken
connections by itself. The password of the ``db`` URL never reaches a log
or an error message.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from h2ochat.server.storage import (
    DELETE_SUBTREE,
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
    SchemaTooNew,
    Session,
    SessionGone,
    StopListener,
    StoreOptions,
    StoreUnavailable,
    TooManyConversations,
    TooManyMessages,
    like_pattern,
    redact,
    tree_of,
)
from h2ochat.server.storage.postgres_connections import UNAVAILABLE, Connections, rows
from h2ochat.server.storage.postgres_devices import PostgresDevices, forget_devices, move_devices
from h2ochat.server.storage.postgres_notify import CHANNEL, StopChannel
from h2ochat.server.storage.postgres_people import PostgresPeople, forget_usage, keep_people_seen
from h2ochat.server.storage.postgres_portability import PostgresPortability
from h2ochat.server.storage.postgres_runs import PostgresRuns
from h2ochat.server.storage.postgres_sessions import live_session
from h2ochat.server.storage.postgres_shares import PostgresShares, forget_shares
from h2ochat.server.storage.postgres_sql import CHECKPOINT, EPOCH, FINISH, INTERRUPT, NOW, RESUME, clock
from h2ochat.server.storage.postgres_web_searches import PostgresWebSearches

__all__ = ["PostgresStore"]

log = logging.getLogger("h2ochat.server")

FORGET_REPLICAS = 3600.0  # seconds after which a dead replica's row is deleted
_LIVE = live_session("$1", "$2", "$3")


class PostgresStore(
    PostgresRuns, PostgresShares, PostgresPortability, PostgresDevices, PostgresWebSearches, PostgresPeople
):
    """:class:`~h2ochat.server.storage.Store` on PostgreSQL. Open with ``await PostgresStore.open(url)``."""

    def __init__(self, dsn: str, options: StoreOptions) -> None:
        self.options = options
        self.replica = secrets.token_hex(8)  # this process: its answers and its lease carry this id
        self._db = Connections(dsn, options.pool_size, options.preprompts)
        self._stops = StopChannel(dsn, self.replica, UNAVAILABLE)
        self._unsaved: dict[tuple[str, str], Callable[[], Awaitable[int]]] = {}

    @classmethod
    async def open(cls, dsn: str, options: StoreOptions | None = None) -> PostgresStore:
        store = cls(dsn, options or StoreOptions())
        try:
            await store._db.open()
            async with store._db.own() as db:
                await store._renew_lease(db)
        except SchemaTooNew:
            await store._db.close()
            raise
        except Exception as exc:
            await store._db.close()
            raise StoreUnavailable(
                f"could not open the database {redact(dsn)}: {store._db.scrub(f'{type(exc).__name__}: {exc}')}"
            ) from None
        store._stops.start()
        return store

    @property
    def statements(self) -> int:
        return self._db.statements

    async def close(self) -> None:
        await self._stops.close()
        if self._db.closed:
            return
        try:
            # Whatever this replica leaves generating is interrupted now, not when its lease runs out.
            async with self._db.pooled() as db:
                await db.execute(f"{INTERRUPT} AND replica = $1", self.replica)
                await db.execute("DELETE FROM replicas WHERE id = $1", self.replica)
        except StoreUnavailable:
            pass  # logged; the other replicas mark them when this one's lease runs out
        finally:
            await self._db.close()

    # Replicas -----------------------------------------------------------------------------

    async def _renew_lease(self, db: Any) -> None:
        await db.execute(
            f"INSERT INTO replicas (id, started_at, seen_at) VALUES ($1, {NOW}, {NOW}) "
            "ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
            self.replica,
        )

    async def upkeep(self) -> None:
        async with self._db.own() as db:
            await self._renew_lease(db)
            cutoff = clock("$1")
            alive = f"SELECT id FROM replicas WHERE seen_at >= {cutoff}"
            # An answer checkpointed within the lease is alive, whatever its replica's lease says.
            sweep = f"{INTERRUPT} AND updated_at < {cutoff} AND (replica IS NULL OR replica NOT IN ({alive}))"
            marked = rows(await db.execute(sweep, self.options.lease))
            if marked:
                log.warning("%d answer(s) of a replica that stopped renewing its lease marked interrupted", marked)
            await self._clean(db)
            await self._compact_runs(db)
        for key, save in list(self._unsaved.items()):
            await save()  # raises StoreUnavailable if the database went away again: the rest waits
            del self._unsaved[key]

    async def _clean(self, db: Any) -> None:
        """Delete what has expired: replicas long gone, idle sessions with their conversations,
        conversations left without a message (:data:`ORPHANS`), old rate entries."""
        ago = clock("$1")  # $1 seconds ago
        async with db.transaction():
            await db.execute(f"DELETE FROM replicas WHERE seen_at < {ago}", FORGET_REPLICAS)
            await keep_people_seen(db, self.options.session_idle)
            await forget_usage(db, self.options.session_idle)
            await forget_shares(db, self.options.session_idle)
            await forget_devices(db, self.options.session_idle)
            await db.execute(
                f"DELETE FROM conversations WHERE session_id IN (SELECT id FROM sessions WHERE seen_at < {ago})",
                self.options.session_idle,
            )
            await db.execute(f"DELETE FROM sessions WHERE seen_at < {ago}", self.options.session_idle)
            await db.execute(ORPHANS.format(cutoff=ago), self.options.orphan_ttl)
            await db.execute(f"DELETE FROM rate_events WHERE at < {EPOCH} - 60")

    # Sessions -----------------------------------------------------------------------------

    async def new_session(self) -> str:
        session_id = secrets.token_urlsafe(32)
        await self._db.execute(
            f"INSERT INTO sessions (id, created_at, updated_at, seen_at) VALUES ($1, {NOW}, {NOW}, {NOW})",
            session_id,
        )
        return session_id

    async def session(self, session_id: str) -> Session | None:
        # One statement: the lookup, and the use that keeps the session alive.
        row = await self._db.one(
            f"WITH {_LIVE} SELECT id, active_model, share_conversations, ethics_accepted_at, search_enabled "
            "FROM sessions WHERE id = (SELECT id FROM live)",
            *self._session_values(session_id),
        )
        return None if row is None else Session(row[0], row[1], row[2], row[3], row[4])

    def _session_values(self, session_id: str) -> tuple[str, float, float]:
        """The values of :data:`_LIVE`'s placeholders ($2 and $3 follow the session's)."""
        return session_id, self.options.session_idle, self.options.touch_after

    async def renew_session(self, session_id: str) -> str:
        fresh = secrets.token_urlsafe(32)
        async with self._db.pooled() as db, db.transaction():
            await db.execute(f"UPDATE sessions SET id = $1, seen_at = {NOW} WHERE id = $2", fresh, session_id)
            await db.execute("UPDATE conversations SET session_id = $1 WHERE session_id = $2", fresh, session_id)
            await db.execute("UPDATE shares SET session_id = $1 WHERE session_id = $2", fresh, session_id)
            await db.execute("UPDATE web_searches SET session_id = $1 WHERE session_id = $2", fresh, session_id)
            await move_devices(db, fresh, session_id)
            await db.execute("UPDATE people SET session_id = $1 WHERE session_id = $2", fresh, session_id)
            await db.execute("UPDATE usage SET session_id = $1 WHERE session_id = $2", fresh, session_id)
        return fresh

    async def save_settings(
        self, session_id: str, active_model: str | None, share: bool, accepted: bool, search: bool | None = None
    ) -> str:
        session_id = session_id or secrets.token_urlsafe(32)  # a new session: the upsert inserts it
        await self._db.execute(
            f"""
            INSERT INTO sessions (id, active_model, share_conversations, ethics_accepted_at, created_at, updated_at,
                                  seen_at, search_enabled)
            VALUES ($1, $2, $3, CASE WHEN $4 THEN {NOW} END, {NOW}, {NOW}, {NOW}, coalesce($5::boolean, false))
            ON CONFLICT (id) DO UPDATE SET
                active_model = coalesce($2, sessions.active_model),
                share_conversations = $3,
                search_enabled = coalesce($5::boolean, sessions.search_enabled),
                ethics_accepted_at = coalesce(sessions.ethics_accepted_at, excluded.ethics_accepted_at),
                updated_at = excluded.updated_at,
                seen_at = excluded.seen_at
            """,
            *(session_id, active_model, share, accepted, search),
        )
        return session_id

    async def admit(self, bucket: str, per_minute: int) -> float:
        # One round trip: the function (postgres_schema) locks the bucket, then counts and inserts.
        return float(await self._db.value("SELECT h2ochat_admit($1, $2)", bucket, per_minute))

    # Conversations ------------------------------------------------------------------------

    async def create_conversation(
        self, session_id: str, model: str, limit: int = 0, *, preprompt: str = ""
    ) -> NewConversation:
        ids = (secrets.token_hex(12), session_id, str(uuid.uuid4()))
        # One round trip: the function checks the session (locking its row to count its conversations
        # under a limit), then inserts the conversation with its system root, and answers the time stored.
        values = (ids[0], session_id, model, ids[2], preprompt, limit, *self._session_values(session_id)[1:])
        outcome, created = await self._db.one(
            "SELECT outcome, created FROM h2ochat_create_conversation($1, $2, $3, $4, $5, $6, $7, $8)", *values
        )
        if outcome == "no session":
            raise SessionGone("This session is not one the server issued, or it expired")
        if outcome == "full":
            raise TooManyConversations(limit)
        return NewConversation.stored(ids, model, preprompt, created)

    async def conversation(self, conversation_id: str, session_id: str) -> Conversation | None:
        row = await self._db.one(
            f"{SELECT_CONVERSATION} WHERE id = $1 AND session_id = $2", conversation_id, session_id
        )
        return None if row is None else Conversation.from_row(row)

    async def conversation_with_messages(
        self, conversation_id: str, session_id: str, *, accepted: bool = False
    ) -> tuple[Conversation, list[MessageRow]] | None:
        live = live_session("$2", "$3", "$4", accepted=accepted)
        sql = f"WITH {live} {SELECT_TREE.format(c='$1', s='(SELECT id FROM live)')}"
        return tree_of(await self._db.all(sql, conversation_id, *self._session_values(session_id)))

    async def conversations(self, session_id: str) -> list[Conversation]:
        rows = await self._db.all(f"{SELECT_CONVERSATION} WHERE session_id = $1 ORDER BY updated_at DESC", session_id)
        return [Conversation.from_row(row) for row in rows]

    async def search_conversations(self, session_id: str, query: str) -> list[Conversation]:
        # ILIKE folds case as the database's locale does: ASCII letters in the C locale, more in others.
        rows = await self._db.all(
            f"{SELECT_CONVERSATION} AS c WHERE session_id = $1 AND (title ILIKE $2 OR EXISTS "
            "(SELECT 1 FROM messages WHERE conversation_id = c.id AND content ILIKE $2)) ORDER BY updated_at DESC",
            session_id,
            like_pattern(query),
        )
        return [Conversation.from_row(row) for row in rows]

    async def delete_conversation(self, conversation_id: str, session_id: str, *, stop: str = "") -> bool:
        # One statement: the session's check and use, the deletion, and with a stop, the other replicas
        # told (at its commit) only if it deleted something that was being generated: a notification
        # wakes every replica, and most deletions come after their answers (this statement sees the
        # messages as they were before it).
        deleted = "DELETE FROM conversations WHERE id = $1 AND session_id = (SELECT id FROM live) RETURNING 1"
        generating = "EXISTS (SELECT 1 FROM messages WHERE conversation_id = $1 AND status = 'generating')"
        answer = (
            f"SELECT CASE WHEN {generating} THEN pg_notify($5, $6) END FROM deleted"
            if stop
            else "SELECT 1 FROM deleted"
        )
        sql = f"WITH {live_session('$2', '$3', '$4')}, deleted AS ({deleted}) {answer}"
        told = (CHANNEL, self._stops.payload(conversation_id, stop)) if stop else ()
        if not await self._db.all(sql, conversation_id, *self._session_values(session_id), *told):
            return False
        if stop:
            self._stops.deliver(conversation_id, stop)
        return True

    async def rename_conversation(
        self, conversation_id: str, session_id: str, title: str, *, only_if: str | None = None
    ) -> bool:
        # updated_at stays: it orders the sidebar by the last message, and a new name is no news.
        sql = "UPDATE conversations SET title = $1 WHERE id = $2 AND session_id = $3"
        values: tuple[str, ...] = (title, conversation_id, session_id)
        if only_if is not None:
            sql, values = sql + " AND title = $4", (*values, only_if)
        return await self._db.execute(sql, *values) > 0

    async def save_conversation_settings(
        self, conversation_id: str, session_id: str, settings: Mapping[str, Any]
    ) -> bool:
        sql = "UPDATE conversations SET settings = $1 WHERE id = $2 AND session_id = $3"
        return await self._db.execute(sql, json.dumps(dict(settings)), conversation_id, session_id) > 0

    # Messages -----------------------------------------------------------------------------

    async def messages(self, conversation_id: str) -> list[MessageRow]:
        rows = await self._db.all(f"{SELECT_MESSAGE} WHERE conversation_id = $1 ORDER BY position", conversation_id)
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
        user_id, inputs = user if user is not None else (None, None)
        values = (conversation_id, parent_id, user_id, inputs, answer_id, self.replica, left_out, limit)
        try:
            # One round trip: the function locks the conversation's row, then counts, inserts and updates.
            outcome = await self._db.value("SELECT h2ochat_begin_exchange($1, $2, $3, $4, $5, $6, $7, $8)", *values)
            if outcome == "gone":
                raise ConversationGone("The conversation or the message this one follows was deleted meanwhile")
            if outcome == "full":
                raise TooManyMessages(limit)
        except asyncpg.UniqueViolationError:
            raise MessageIdTaken(
                "Another request stored a message with this options.id or response_id first; send new ids"
            ) from None
        except asyncpg.ForeignKeyViolationError:
            raise ConversationGone("The conversation was deleted while the message was being sent") from None

    async def resume_answer(self, conversation_id: str, answer_id: str) -> bool:
        return await self._db.execute(RESUME, self.replica, conversation_id, answer_id) > 0

    async def set_active(self, conversation_id: str, leaf_id: str) -> bool:
        sql = (
            "UPDATE conversations SET active_id = $1 WHERE id = $2 "
            "AND EXISTS (SELECT 1 FROM messages WHERE conversation_id = $2 AND id = $1)"
        )
        return await self._db.execute(sql, leaf_id, conversation_id) > 0

    async def delete_message(self, conversation_id: str, message_id: str, active_id: str) -> int:
        # One statement: the rows go and the active branch moves together, or neither.
        sql = (
            f"WITH RECURSIVE {SUBTREE}, deleted AS ({DELETE_SUBTREE} RETURNING 1), "
            "moved AS (UPDATE conversations SET active_id = $3 WHERE id = $1 AND EXISTS (SELECT 1 FROM deleted)) "
            "SELECT count(*) FROM deleted"
        ).format(c="$1", m="$2")
        return int((await self._db.one(sql, conversation_id, message_id, active_id))[0])

    async def set_preprompt(self, conversation_id: str, preprompt: str) -> None:
        sql = f"UPDATE messages SET content = $1, updated_at = {NOW} WHERE conversation_id = $2 AND parent_id IS NULL"
        await self._db.execute(sql, preprompt, conversation_id)

    async def vote(self, conversation_id: str, message_id: str, score: int) -> bool:
        sql = "UPDATE messages SET score = $1 WHERE conversation_id = $2 AND id = $3 AND role = 'assistant'"
        return await self._db.execute(sql, score, conversation_id, message_id) > 0

    async def save_partial(self, conversation_id: str, answer_id: str, content: str, generated_tokens: int) -> None:
        # A checkpoint is best effort: the next one, or the final save, carries the text.
        with contextlib.suppress(StoreUnavailable):
            await self._db.execute(CHECKPOINT, content, generated_tokens, conversation_id, answer_id)

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
        values = (content, status, finish_reason, interruption, generated_tokens, conversation_id, answer_id)
        save = functools.partial(self._db.execute, FINISH, *values)
        try:
            await save()
        except StoreUnavailable:
            log.warning("answer %s could not be saved now; it is kept and saved when the database is back", answer_id)
            self._unsaved[conversation_id, answer_id] = save

    # Stopping -----------------------------------------------------------------------------

    def on_stop(self, listener: StopListener) -> None:
        self._stops.add(listener)

    async def request_stop(self, conversation_id: str, reason: str) -> None:
        self._stops.deliver(conversation_id, reason)  # here at once, even if the database is away
        async with self._db.pooled() as db:
            await self._stops.notify(db, conversation_id, reason)
