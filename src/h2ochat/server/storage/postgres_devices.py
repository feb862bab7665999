"""Devices on PostgreSQL (:mod:`.devices`): a mixin of :class:`~h2ochat.server.storage.postgres.PostgresStore`.

Nothing is cached in a replica: every request's device is looked up in the database, so a device
detached on one replica is refused by every other at its next request.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from h2ochat.server.storage import Session, StoreOptions
from h2ochat.server.storage.devices import FIRST_DEVICE, Device, digest
from h2ochat.server.storage.postgres_sessions import live_session
from h2ochat.server.storage.postgres_sql import NOW, clock

if TYPE_CHECKING:
    from h2ochat.server.storage.postgres_connections import Connections

__all__ = ["PostgresDevices", "forget_devices", "move_devices"]

# One statement: the device, its session if live, and the use of both recorded (each at most once
# every $3 seconds, as a session's own). $1: the secret's hash; $2, $3: idle and touch seconds.
_DEVICE_SESSION = (
    f"WITH device AS (SELECT id, session_id, seen_at < {clock('$3')} AS stale FROM devices WHERE secret_hash = $1), "
    f"{live_session('(SELECT session_id FROM device)', '$2', '$3')}, "
    f"used AS (UPDATE devices SET seen_at = {NOW} WHERE id = (SELECT id FROM device) "
    "AND (SELECT stale FROM device) AND EXISTS (SELECT 1 FROM live)) "
    "SELECT id, active_model, share_conversations, ethics_accepted_at, search_enabled, (SELECT id FROM device) "
    "FROM sessions "
    "WHERE id = (SELECT id FROM live)"
)
_LINK = (
    "WITH spent AS (DELETE FROM device_codes WHERE code_hash = $1 AND expires_at > "
    f"{NOW} RETURNING session_id), "
    "session AS (SELECT s.id FROM sessions AS s JOIN spent ON s.id = spent.session_id "
    f"WHERE s.seen_at >= {clock('$5')}) "
    "INSERT INTO devices (id, session_id, secret_hash, label, created_at, seen_at) "
    f"SELECT $2, id, $3, $4, {NOW}, {NOW} FROM session RETURNING session_id"
)


async def forget_devices(db: Any, session_idle: float) -> None:
    """The upkeep's part (in its transaction, before the idle sessions go): expired codes, and the
    devices and codes of sessions idle longer than ``session_idle`` seconds."""
    await db.execute(f"DELETE FROM device_codes WHERE expires_at <= {NOW}")
    idle = f"SELECT id FROM sessions WHERE seen_at < {clock('$1')}"
    await db.execute(f"DELETE FROM devices WHERE session_id IN ({idle})", session_idle)
    await db.execute(f"DELETE FROM device_codes WHERE session_id IN ({idle})", session_idle)


async def move_devices(db: Any, fresh: str, old: str) -> None:
    """The renewal's part: the devices and the code follow the session to its fresh id."""
    await db.execute("UPDATE devices SET session_id = $1 WHERE session_id = $2", fresh, old)
    await db.execute("UPDATE device_codes SET session_id = $1 WHERE session_id = $2", fresh, old)


class PostgresDevices:
    if TYPE_CHECKING:  # the store's own, which this mixin uses
        _db: Connections
        options: StoreOptions

    async def device_code(self, session_id: str, code: str, ttl: float) -> str:
        async with self._db.pooled() as db, db.transaction():
            await db.execute("DELETE FROM device_codes WHERE session_id = $1", session_id)
            sql = f"INSERT INTO device_codes (code_hash, session_id, expires_at) VALUES ($1, $2, {clock('$3')}) "
            return str(await db.fetchval(sql + "RETURNING expires_at", digest(code), session_id, -ttl))

    async def link_device(self, code: str, secret: str, label: str) -> str | None:
        values = (digest(code), secrets.token_urlsafe(12), digest(secret), label, self.options.session_idle)
        found = await self._db.value(_LINK, *values)
        return None if found is None else str(found)

    async def device_session(self, secret: str) -> tuple[Session, str] | None:
        row = await self._db.one(_DEVICE_SESSION, digest(secret), self.options.session_idle, self.options.touch_after)
        return None if row is None else (Session(row[0], row[1], row[2], row[3], row[4]), str(row[5]))

    async def devices(self, session_id: str) -> list[Device]:
        found = await self._db.all(
            "SELECT $2::text, '', created_at, seen_at, 0 AS o FROM sessions WHERE id = $1 UNION ALL "
            "SELECT id, label, created_at, seen_at, 1 FROM devices WHERE session_id = $1 ORDER BY 5, 3, 1",
            session_id,
            FIRST_DEVICE,
        )
        return [Device(*row[:4]) for row in found]

    async def detach_device(self, session_id: str, device_id: str) -> bool:
        sql = "DELETE FROM devices WHERE id = $1 AND session_id = $2"
        return await self._db.execute(sql, device_id, session_id) > 0
