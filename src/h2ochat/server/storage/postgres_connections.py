"""The PostgreSQL store's connections: a pool for requests, one of the upkeep's own, and the migrations.

Every way to the database passes here, so that exactly one place turns a
database out of reach into :class:`StoreUnavailable` (with the ``db`` URL's
password scrubbed from what is logged), and every wait is bounded: connect,
acquire and command timeouts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from h2ochat.server.storage import SchemaTooNew, StoreUnavailable, now, redact
from h2ochat.server.storage.postgres_schema import MIGRATIONS

__all__ = ["UNAVAILABLE", "Connections"]

log = logging.getLogger("h2ochat.server")

CONNECT_TIMEOUT = 5.0  # seconds to open a connection
ACQUIRE_TIMEOUT = 30.0  # seconds to wait for a free pooled connection: queueing under load, not an outage
COMMAND_TIMEOUT = 15.0  # seconds a statement may take
MIGRATION_LOCK = 0x68326F63  # "h2oc": the advisory lock key held while migrating

# What a database that is down, restarting or unreachable raises.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
)


class Connections:
    def __init__(self, dsn: str, pool_size: int, preprompts: Mapping[str, str]) -> None:
        self.dsn = dsn
        self._pool_size = pool_size
        self._preprompts = json.dumps(dict(preprompts))  # read by the migration to trees
        self._pool: Any = None
        self._own: Any = None
        self.statements = 0  # every statement sent on any of the store's connections

    async def open(self) -> None:
        """Create the pool and migrate; raises :class:`SchemaTooNew`, or whatever asyncpg raises."""
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self._pool_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            reset=_keep,
            init=self._watch,
        )
        await self._migrate()

    async def close(self) -> None:
        if self._own is not None:
            self._own.terminate()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=5.0)
            except UNAVAILABLE:
                pool.terminate()

    async def _watch(self, connection: Any) -> None:
        """Count the statements sent on ``connection``: asyncpg logs each one, BEGIN and COMMIT too,
        and a batch (``executemany``) once, as it goes in one round trip."""
        connection.add_query_logger(self._count)

    def _count(self, _query: Any) -> None:
        self.statements += 1

    @property
    def closed(self) -> bool:
        return self._pool is None

    def scrub(self, text: str) -> str:
        """``text`` without the password of the ``db`` URL, wherever it appears."""
        password = urlsplit(self.dsn).password
        text = redact(text)
        return text.replace(password, "***") if password else text

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        log.warning("database %s unavailable: %s", redact(self.dsn), self.scrub(f"{type(exc).__name__}: {exc}"))
        return StoreUnavailable("The database is unavailable; try again in a few seconds")

    @asynccontextmanager
    async def pooled(self) -> AsyncIterator[Any]:
        """A pooled connection; a database out of reach becomes :class:`StoreUnavailable`."""
        if self._pool is None:
            raise RuntimeError("the store is closed")
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as db:
                yield db
        except UNAVAILABLE as exc:
            raise self._unavailable(exc) from None

    @asynccontextmanager
    async def own(self) -> AsyncIterator[Any]:
        """The upkeep's connection, outside the pool: renewing the lease never queues behind requests
        (under load, a late renewal made another replica take live answers for abandoned)."""
        try:
            if self._own is None or self._own.is_closed():
                self._own = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
                await self._watch(self._own)
            yield self._own
        except UNAVAILABLE as exc:
            raise self._unavailable(exc) from None

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it touched."""
        async with self.pooled() as db:
            return rows(await db.execute(sql, *args))

    async def value(self, sql: str, *args: Any) -> Any:
        """The first column of the first row."""
        async with self.pooled() as db:
            return await db.fetchval(sql, *args)

    async def one(self, sql: str, *args: Any) -> Any:
        async with self.pooled() as db:
            return await db.fetchrow(sql, *args)

    async def all(self, sql: str, *args: Any) -> list[Any]:
        async with self.pooled() as db:
            return list(await db.fetch(sql, *args))

    async def _migrate(self) -> None:
        async with self.pooled() as db:
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
                            # Migrations read the models' preprompts from a setting of their own transaction.
                            await db.execute("SELECT set_config('h2ochat.preprompts', $1, true)", self._preprompts)
                            await db.execute(script)
                            await db.execute("INSERT INTO _migrations (name, applied_at) VALUES ($1, $2)", name, now())
                        log.info("database migration %s applied", name)
            finally:
                await db.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def _keep(_connection: Any) -> None:
    """Return a connection to the pool as it is, without asyncpg's reset query (a round trip on every
    release, a third of a statement's cost here). Nothing here changes a session's state: no LISTEN
    (the stop channel has its own connection), no settings, no cursors, advisory locks released by the
    code that takes them; asyncpg still rolls back a transaction left open."""


def rows(status: str) -> int:
    """The rows a statement touched, from its status (``UPDATE 3``)."""
    return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0
