"""The PostgreSQL store: several replicas of the server on one database, through an asyncpg pool.

What SQLite gets from being one process, PostgreSQL gets from the database:

- statements that must hold together lock what they count or extend (the
  conversation row before positions are taken, the session row before its
  conversations are counted, an advisory lock per rate-limit bucket), so two
  replicas cannot both take the last place;
- migrations run under an advisory lock, so replicas starting together apply
  each one once;
- a stop request is a ``NOTIFY`` that every replica ``LISTEN``\\s to on a
  connection of its own, reconnected when the database comes back;
- every replica renews a lease (``replicas.seen_at``) in :meth:`upkeep`; the
  answers a replica generates carry its id, and any replica marks those of a
  replica whose lease ran out ``interrupted``, keeping the text saved last.

A database that cannot be reached raises :class:`StoreUnavailable` within
seconds (connect, acquire and command timeouts); the pool replaces broken
connections by itself. The password of the ``db`` URL never reaches a log
or an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

from h2ochat.server.storage import (
    Conversation,
    ConversationGone,
    MessageIdTaken,
    MessageRow,
    SchemaTooNew,
    Session,
    StopListener,
    StoreOptions,
    StoreUnavailable,
    TooManyConversations,
    now,
    redact,
)
from h2ochat.server.storage.postgres_notify import StopChannel
from h2ochat.server.storage.postgres_schema import MIGRATIONS

__all__ = ["PostgresStore"]

log = logging.getLogger("h2ochat.server")
T = TypeVar("T")

CONNECT_TIMEOUT = 5.0  # seconds to open a connection
ACQUIRE_TIMEOUT = 5.0  # seconds to wait for a free pooled connection
COMMAND_TIMEOUT = 15.0  # seconds a statement may take
MIGRATION_LOCK = 0x68326F63  # "h2oc": the advisory lock key held while migrating
FORGET_REPLICAS = 3600.0  # seconds after which a dead replica's row is deleted

# What a database that is down, restarting or unreachable raises.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
)

_CONVERSATION = "SELECT id, session_id, model, title, created_at, updated_at FROM conversations"
_INTERRUPT = (
    "UPDATE messages SET status = 'interrupted', interruption = 'server stopped', updated_at = $1 "
    "WHERE status = 'generating'"
)
_CHECKPOINT = (
    "UPDATE messages SET content = $1, generated_tokens = $2, updated_at = $3 "
    "WHERE conversation_id = $4 AND id = $5 AND status = 'generating'"
)
_FINISH = (
    "UPDATE messages SET content = $1, status = $2, finish_reason = $3, interruption = $4, "
    "generated_tokens = $5, updated_at = $6 WHERE conversation_id = $7 AND id = $8"
)
_MESSAGE = (
    "SELECT id, position, role, content, status, finish_reason, interruption, generated_tokens, "
    "created_at, updated_at FROM messages"
)


class PostgresStore:
    """:class:`~h2ochat.server.storage.Store` on PostgreSQL. Open with ``await PostgresStore.open(url)``."""

    def __init__(self, dsn: str, options: StoreOptions) -> None:
        self._dsn = dsn
        self.options = options
        self.replica = secrets.token_hex(8)  # this process: its answers and its lease carry this id
        self._pool: Any = None
        self._stops = StopChannel(dsn, self.replica, _UNAVAILABLE)
        self._unsaved: dict[tuple[str, str], Callable[[], Awaitable[int]]] = {}

    @classmethod
    async def open(cls, dsn: str, options: StoreOptions | None = None) -> PostgresStore:
        store = cls(dsn, options or StoreOptions())
        try:
            store._pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=store.options.pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
            )
            await store._migrate()
            await store._renew_lease()
        except SchemaTooNew:
            await store.close()
            raise
        except Exception as exc:
            await store.close()
            raise StoreUnavailable(
                f"could not open the database {redact(dsn)}: {store._scrub(f'{type(exc).__name__}: {exc}')}"
            ) from None
        store._stops.start()
        return store

    async def close(self) -> None:
        await self._stops.close()
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            # Whatever this replica leaves generating is interrupted now, not when its lease runs out.
            async with pool.acquire(timeout=ACQUIRE_TIMEOUT) as db:
                await db.execute(f"{_INTERRUPT} AND replica = $2", now(), self.replica)
                await db.execute("DELETE FROM replicas WHERE id = $1", self.replica)
        except _UNAVAILABLE as exc:
            log.warning("the database was not reachable while closing: %s", self._scrub(str(exc)))
        finally:
            await _close_pool(pool)

    def _scrub(self, text: str) -> str:
        """``text`` without the password of the ``db`` URL, wherever it appears."""
        password = urlsplit(self._dsn).password
        text = redact(text)
        return text.replace(password, "***") if password else text

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; a database out of reach becomes :class:`StoreUnavailable`."""
        if self._pool is None:
            raise RuntimeError("the store is closed")
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as db:
                yield db
        except _UNAVAILABLE as exc:
            log.warning("database %s unavailable: %s", redact(self._dsn), self._scrub(f"{type(exc).__name__}: {exc}"))
            raise StoreUnavailable("The database is unavailable; try again in a few seconds") from None

    async def _execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it touched."""
        async with self._connection() as db:
            status: str = await db.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def _one(self, sql: str, *args: Any) -> Any:
        async with self._connection() as db:
            return await db.fetchrow(sql, *args)

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection() as db:
            return list(await db.fetch(sql, *args))

    async def _migrate(self) -> None:
        async with self._connection() as db:
            # Replicas starting together wait here in turn; the first applies, the others find it done.
            await db.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await db.execute(
                    "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
                )
                applied = {row[0] for row in await db.fetch("SELECT name FROM _migrations")}
                unknown = applied - {name for name, _ in MIGRATIONS}
                if unknown:
                    raise SchemaTooNew(
                        f"the database was migrated by a newer h2ochat (migrations {', '.join(sorted(unknown))} "
                        "are unknown to this version); upgrade h2ochat or use another database"
                    )
                for name, script in MIGRATIONS:
                    if name not in applied:
                        async with db.transaction():
                            await db.execute(script)
                            await db.execute("INSERT INTO _migrations (name, applied_at) VALUES ($1, $2)", name, now())
                        log.info("database migration %s applied", name)
            finally:
                await db.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    # Replicas -----------------------------------------------------------------------------

    async def _renew_lease(self) -> None:
        stamp = now()
        await self._execute(
            "INSERT INTO replicas (id, started_at, seen_at) VALUES ($1, $2, $2) "
            "ON CONFLICT (id) DO UPDATE SET seen_at = $2",
            self.replica,
            stamp,
        )

    async def upkeep(self) -> None:
        await self._renew_lease()
        stamp = now()
        alive = "SELECT id FROM replicas WHERE seen_at >= $2"
        sweep = f"{_INTERRUPT} AND (replica IS NULL OR replica NOT IN ({alive}))"
        marked = await self._execute(sweep, stamp, now(self.options.lease))
        if marked:
            log.warning("%d answer(s) of a replica that stopped renewing its lease marked interrupted", marked)
        async with self._connection() as db, db.transaction():
            await db.execute("DELETE FROM replicas WHERE seen_at < $1", now(FORGET_REPLICAS))
            cutoff = now(self.options.session_idle)
            await db.execute(
                "DELETE FROM conversations WHERE session_id IN (SELECT id FROM sessions WHERE seen_at < $1)", cutoff
            )
            await db.execute("DELETE FROM sessions WHERE seen_at < $1", cutoff)
            await db.execute("DELETE FROM rate_events WHERE at < $1", time.time() - 60)
        for key, save in list(self._unsaved.items()):
            await save()  # raises StoreUnavailable if the database went away again: the rest waits
            del self._unsaved[key]

    # Sessions -----------------------------------------------------------------------------

    async def new_session(self) -> str:
        session_id = secrets.token_urlsafe(32)
        stamp = now()
        await self._execute(
            "INSERT INTO sessions (id, created_at, updated_at, seen_at) VALUES ($1, $2, $2, $2)", session_id, stamp
        )
        return session_id

    async def session(self, session_id: str) -> Session | None:
        row = await self._one(
            "SELECT id, active_model, share_conversations, ethics_accepted_at, seen_at FROM sessions "
            "WHERE id = $1 AND seen_at >= $2",
            session_id,
            now(self.options.session_idle),
        )
        if row is None:
            return None
        if row[4] < now(min(60.0, self.options.session_idle / 4)):  # a read mostly stays a read
            await self._execute("UPDATE sessions SET seen_at = $1 WHERE id = $2", now(), session_id)
        return Session(row[0], row[1], row[2], row[3])

    async def renew_session(self, session_id: str) -> str:
        fresh = secrets.token_urlsafe(32)
        async with self._connection() as db, db.transaction():
            await db.execute("UPDATE sessions SET id = $1, seen_at = $2 WHERE id = $3", fresh, now(), session_id)
            await db.execute("UPDATE conversations SET session_id = $1 WHERE session_id = $2", fresh, session_id)
        return fresh

    async def save_settings(self, session_id: str, active_model: str | None, share: bool, accepted: bool) -> None:
        stamp = now()
        await self._execute(
            """
            INSERT INTO sessions (id, active_model, share_conversations, ethics_accepted_at, created_at, updated_at,
                                  seen_at)
            VALUES ($1, $2, $3, $4, $5, $5, $5)
            ON CONFLICT (id) DO UPDATE SET
                active_model = coalesce($2, sessions.active_model),
                share_conversations = $3,
                ethics_accepted_at = coalesce(sessions.ethics_accepted_at, $4),
                updated_at = $5,
                seen_at = $5
            """,
            *(session_id, active_model, share, stamp if accepted else None, stamp),
        )

    async def admit(self, bucket: str, per_minute: int) -> float:
        async with self._connection() as db, db.transaction():
            # One bucket is counted by one replica at a time; other buckets go on in parallel.
            await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", bucket)
            moment = time.time()
            await db.execute("DELETE FROM rate_events WHERE bucket = $1 AND at <= $2", bucket, moment - 60)
            used, oldest = await db.fetchrow("SELECT count(*), min(at) FROM rate_events WHERE bucket = $1", bucket)
            if used >= per_minute:
                return max(0.001, float(oldest) + 60 - moment)
            await db.execute("INSERT INTO rate_events (bucket, at) VALUES ($1, $2)", bucket, moment)
            return 0.0

    # Conversations ------------------------------------------------------------------------

    async def create_conversation(self, session_id: str, model: str, limit: int = 0) -> str:
        conversation_id = secrets.token_hex(12)
        stamp = now()
        async with self._connection() as db, db.transaction():
            if limit:
                # The session's row is the lock: replicas creating for one session count in turn.
                await db.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
                count = await db.fetchval("SELECT count(*) FROM conversations WHERE session_id = $1", session_id)
                if count >= limit:
                    raise TooManyConversations(limit)
            await db.execute(
                "INSERT INTO conversations (id, session_id, model, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
                conversation_id,
                session_id,
                model,
                stamp,
            )
        return conversation_id

    async def conversation(self, conversation_id: str, session_id: str) -> Conversation | None:
        row = await self._one(f"{_CONVERSATION} WHERE id = $1 AND session_id = $2", conversation_id, session_id)
        return None if row is None else Conversation(*row)

    async def conversations(self, session_id: str) -> list[Conversation]:
        rows = await self._all(f"{_CONVERSATION} WHERE session_id = $1 ORDER BY updated_at DESC", session_id)
        return [Conversation(*row) for row in rows]

    async def delete_conversation(self, conversation_id: str, session_id: str) -> bool:
        sql = "DELETE FROM conversations WHERE id = $1 AND session_id = $2"
        return await self._execute(sql, conversation_id, session_id) > 0

    async def rename_conversation(self, conversation_id: str, session_id: str, title: str) -> bool:
        sql = "UPDATE conversations SET title = $1, updated_at = $2 WHERE id = $3 AND session_id = $4"
        return await self._execute(sql, title, now(), conversation_id, session_id) > 0

    # Messages -----------------------------------------------------------------------------

    async def messages(self, conversation_id: str) -> list[MessageRow]:
        rows = await self._all(f"{_MESSAGE} WHERE conversation_id = $1 ORDER BY position", conversation_id)
        return [MessageRow(*row) for row in rows]

    async def begin_exchange(
        self, conversation_id: str, user_id: str, inputs: str, answer_id: str, replace_from: int | None
    ) -> None:
        stamp = now()
        try:
            async with self._connection() as db, db.transaction():
                # The conversation's row is the lock: exchanges of one conversation take positions in turn.
                if await db.fetchval("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", conversation_id) is None:
                    raise ConversationGone("The conversation was deleted while the message was being sent")
                if replace_from is not None:
                    await db.execute(
                        "DELETE FROM messages WHERE conversation_id = $1 AND position >= $2",
                        conversation_id,
                        replace_from,
                    )
                position = await db.fetchval(
                    "SELECT coalesce(max(position) + 1, 0) FROM messages WHERE conversation_id = $1", conversation_id
                )
                await db.executemany(
                    "INSERT INTO messages (conversation_id, id, position, role, content, status, replica, created_at, "
                    "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                    [
                        (conversation_id, user_id, position, "user", inputs, "done", None, stamp),
                        (conversation_id, answer_id, position + 1, "assistant", "", "generating", self.replica, stamp),
                    ],
                )
                await db.execute("UPDATE conversations SET updated_at = $1 WHERE id = $2", stamp, conversation_id)
        except asyncpg.UniqueViolationError:
            raise MessageIdTaken(
                "Another request stored a message with this options.id or response_id first; send new ids"
            ) from None
        except asyncpg.ForeignKeyViolationError:
            raise ConversationGone("The conversation was deleted while the message was being sent") from None

    async def save_partial(self, conversation_id: str, answer_id: str, content: str, generated_tokens: int) -> None:
        # A checkpoint is best effort: the next one, or the final save, carries the text.
        with contextlib.suppress(StoreUnavailable):
            await self._execute(_CHECKPOINT, content, generated_tokens, now(), conversation_id, answer_id)

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
        values = (content, status, finish_reason, interruption, generated_tokens, now(), conversation_id, answer_id)
        save = functools.partial(self._execute, _FINISH, *values)
        try:
            await save()
        except StoreUnavailable:
            log.warning("answer %s could not be saved now; it is kept and saved when the database is back", answer_id)
            self._unsaved[conversation_id, answer_id] = save

    # Stopping -----------------------------------------------------------------------------

    def on_stop(self, listener: StopListener) -> None:
        self._stops.add(listener)

    async def request_stop(self, conversation_id: str, reason: str) -> None:
        async with self._connection() as db:
            await self._stops.publish(db, conversation_id, reason)


async def _close_pool(pool: Any) -> None:
    try:
        await asyncio.wait_for(pool.close(), timeout=5.0)
    except _UNAVAILABLE:
        pool.terminate()
