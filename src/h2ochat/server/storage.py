"""Conversations in SQLite: one file, WAL, a versioned schema the program migrates itself.

All database work runs on one dedicated thread, so the event loop never waits
on the disk and the connection is only ever used by the thread that owns it.

An exchange (the user's message and the answer) is written when generation
starts, with the answer marked ``generating``; its text is saved every few
seconds while it grows, and once more, complete, when it ends. A crash in
between leaves it ``generating``; the next start marks such answers
``interrupted``, with the text saved last, so nothing stays half-done.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

__all__ = ["Conversation", "MIGRATIONS", "MessageRow", "Session", "Store", "now"]

T = TypeVar("T")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Session:
    id: str
    active_model: str | None
    share_conversations: bool
    ethics_accepted_at: str | None


@dataclass(frozen=True)
class Conversation:
    id: str
    session_id: str
    model: str
    title: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class MessageRow:
    id: str
    position: int
    role: str
    content: str
    status: str  # generating | done | interrupted
    finish_reason: str | None
    interruption: str | None
    generated_tokens: int | None
    created_at: str
    updated_at: str


def _create_tables(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript() would commit the migration's transaction.
    _execute_all(
        db,
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            active_model TEXT,
            share_conversations INTEGER NOT NULL DEFAULT 0,
            ethics_accepted_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            session_id TEXT NOT NULL,
            model TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT 'New Chat',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX conversations_by_session ON conversations (session_id, updated_at);
        CREATE TABLE messages (
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            id TEXT NOT NULL,
            position INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'done' CHECK (status IN ('generating', 'done', 'interrupted')),
            finish_reason TEXT,
            interruption TEXT,
            generated_tokens INTEGER,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (conversation_id, id),
            UNIQUE (conversation_id, position)
        );
        """,
    )


def _execute_all(db: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


# Applied in order, each once; the names of applied ones are kept in _migrations.
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_create_tables", _create_tables),
]


class Store:
    """The server's database. Open with ``await Store.open(path)``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h2ochat-db")
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: str) -> Store:
        store = cls(path)
        await store._run(store._open)
        return store

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode survives a killed process (only a power cut may lose
        # the last commits), at a fraction of the cost of FULL.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 5000")
        self._db = db
        self._migrate(db)
        with self._transaction() as tx:
            tx.execute(
                "UPDATE messages SET status = 'interrupted', interruption = 'server stopped', updated_at = ? "
                "WHERE status = 'generating'",
                (now(),),
            )

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
        for name, migrate in MIGRATIONS:
            if name in applied:
                continue
            with self._transaction() as tx:
                migrate(tx)
                tx.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, now()))

    def _transaction(self) -> _Transaction:
        assert self._db is not None, "the store is closed"
        return _Transaction(self._db)

    @property
    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None, "the store is closed"
        return self._db

    # Sessions -----------------------------------------------------------------------------

    async def session(self, session_id: str) -> Session | None:
        return await self._run(self._session, session_id)

    def _session(self, session_id: str) -> Session | None:
        row = self._conn.execute(
            "SELECT id, active_model, share_conversations, ethics_accepted_at FROM sessions WHERE id = ?",
            (session_id,),
        ).fetchone()
        return None if row is None else Session(row[0], row[1], bool(row[2]), row[3])

    async def save_settings(self, session_id: str, active_model: str | None, share: bool, accepted: bool) -> None:
        await self._run(self._save_settings, session_id, active_model, share, accepted)

    def _save_settings(self, session_id: str, active_model: str | None, share: bool, accepted: bool) -> None:
        stamp = now()
        self._conn.execute(
            """
            INSERT INTO sessions (id, active_model, share_conversations, ethics_accepted_at, created_at, updated_at)
            VALUES (?1, ?2, ?3, ?4, ?5, ?5)
            ON CONFLICT (id) DO UPDATE SET
                active_model = coalesce(?2, active_model),
                share_conversations = ?3,
                ethics_accepted_at = coalesce(ethics_accepted_at, ?4),
                updated_at = ?5
            """,
            (session_id, active_model, int(share), stamp if accepted else None, stamp),
        )

    # Conversations ------------------------------------------------------------------------

    async def create_conversation(self, session_id: str, model: str) -> str:
        return await self._run(self._create_conversation, session_id, model)

    def _create_conversation(self, session_id: str, model: str) -> str:
        conversation_id = secrets.token_hex(12)  # 24 hex characters, like chat-ui's ObjectIds
        stamp = now()
        self._conn.execute(
            "INSERT INTO conversations (id, session_id, model, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (conversation_id, session_id, model, stamp, stamp),
        )
        return conversation_id

    async def conversation(self, conversation_id: str, session_id: str) -> Conversation | None:
        """The conversation if it exists and belongs to ``session_id``; otherwise None, alike."""
        return await self._run(self._conversation, conversation_id, session_id)

    def _conversation(self, conversation_id: str, session_id: str) -> Conversation | None:
        row = self._conn.execute(
            "SELECT id, session_id, model, title, created_at, updated_at FROM conversations "
            "WHERE id = ? AND session_id = ?",
            (conversation_id, session_id),
        ).fetchone()
        return None if row is None else Conversation(*row)

    async def conversations(self, session_id: str) -> list[Conversation]:
        return await self._run(self._conversations, session_id)

    def _conversations(self, session_id: str) -> list[Conversation]:
        rows = self._conn.execute(
            "SELECT id, session_id, model, title, created_at, updated_at FROM conversations "
            "WHERE session_id = ? ORDER BY updated_at DESC",
            (session_id,),
        ).fetchall()
        return [Conversation(*row) for row in rows]

    async def search_conversations(self, session_id: str, query: str) -> list[Conversation]:
        """The session's conversations whose title or any message holds ``query`` (case-insensitive for ASCII)."""
        return await self._run(self._search_conversations, session_id, query)

    def _search_conversations(self, session_id: str, query: str) -> list[Conversation]:
        # LIKE with its wildcards escaped, so that "%" or "_" in a query match themselves.
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._conn.execute(
            "SELECT id, session_id, model, title, created_at, updated_at FROM conversations AS c "
            "WHERE session_id = ? AND (title LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM messages "
            "WHERE conversation_id = c.id AND content LIKE ? ESCAPE '\\')) ORDER BY updated_at DESC",
            (session_id, pattern, pattern),
        ).fetchall()
        return [Conversation(*row) for row in rows]

    async def delete_conversation(self, conversation_id: str, session_id: str) -> bool:
        return await self._run(self._delete_conversation, conversation_id, session_id)

    def _delete_conversation(self, conversation_id: str, session_id: str) -> bool:
        cursor = self._conn.execute(
            "DELETE FROM conversations WHERE id = ? AND session_id = ?", (conversation_id, session_id)
        )
        return cursor.rowcount > 0

    async def rename_conversation(self, conversation_id: str, session_id: str, title: str) -> bool:
        return await self._run(self._rename_conversation, conversation_id, session_id, title)

    def _rename_conversation(self, conversation_id: str, session_id: str, title: str) -> bool:
        cursor = self._conn.execute(
            "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ? AND session_id = ?",
            (title, now(), conversation_id, session_id),
        )
        return cursor.rowcount > 0

    # Messages -----------------------------------------------------------------------------

    async def messages(self, conversation_id: str) -> list[MessageRow]:
        return await self._run(self._messages, conversation_id)

    def _messages(self, conversation_id: str) -> list[MessageRow]:
        rows = self._conn.execute(
            "SELECT id, position, role, content, status, finish_reason, interruption, generated_tokens, "
            "created_at, updated_at FROM messages WHERE conversation_id = ? ORDER BY position",
            (conversation_id,),
        ).fetchall()
        return [MessageRow(*row) for row in rows]

    async def begin_exchange(
        self, conversation_id: str, user_id: str, inputs: str, answer_id: str, replace_from: int | None
    ) -> None:
        """Store the user's message and an empty answer marked ``generating``.

        ``replace_from`` (a retry) first removes the messages from that position on.
        """
        await self._run(self._begin_exchange, conversation_id, user_id, inputs, answer_id, replace_from)

    def _begin_exchange(
        self, conversation_id: str, user_id: str, inputs: str, answer_id: str, replace_from: int | None
    ) -> None:
        stamp = now()
        with self._transaction() as tx:
            if replace_from is not None:
                tx.execute(
                    "DELETE FROM messages WHERE conversation_id = ? AND position >= ?", (conversation_id, replace_from)
                )
            (position,) = tx.execute(
                "SELECT coalesce(max(position) + 1, 0) FROM messages WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            tx.executemany(
                "INSERT INTO messages (conversation_id, id, position, role, content, status, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (conversation_id, user_id, position, "user", inputs, "done", stamp, stamp),
                    (conversation_id, answer_id, position + 1, "assistant", "", "generating", stamp, stamp),
                ],
            )
            tx.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (stamp, conversation_id))

    async def save_partial(self, conversation_id: str, answer_id: str, content: str, generated_tokens: int) -> None:
        """The text of an answer still being generated (it stays ``generating``)."""
        await self._run(self._save_partial, conversation_id, answer_id, content, generated_tokens)

    def _save_partial(self, conversation_id: str, answer_id: str, content: str, generated_tokens: int) -> None:
        self._conn.execute(
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
        """Complete an answer: ``done`` with its finish reason, or ``interrupted`` with why."""
        await self._run(
            self._finish_answer, conversation_id, answer_id, content, finish_reason, interruption, generated_tokens
        )

    def _finish_answer(
        self,
        conversation_id: str,
        answer_id: str,
        content: str,
        finish_reason: str | None,
        interruption: str | None,
        generated_tokens: int,
    ) -> None:
        self._conn.execute(
            "UPDATE messages SET content = ?, status = ?, finish_reason = ?, interruption = ?, "
            "generated_tokens = ?, updated_at = ? WHERE conversation_id = ? AND id = ?",
            (
                content,
                "interrupted" if interruption else "done",
                finish_reason,
                interruption,
                generated_tokens,
                now(),
                conversation_id,
                answer_id,
            ),
        )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
