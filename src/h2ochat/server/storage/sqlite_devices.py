"""Devices on SQLite (:mod:`.devices`): a mixin of :class:`~h2ochat.server.storage.sqlite.SQLiteStore`."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from h2ochat.server.storage import Session, StoreOptions, now
from h2ochat.server.storage.devices import FIRST_DEVICE, Device, digest
from h2ochat.server.storage.sqlite_schema import transaction

__all__ = ["SQLiteDevices", "forget_devices"]

T = TypeVar("T")


def forget_devices(db: sqlite3.Connection, idle_cutoff: str) -> None:
    """The upkeep's part (in its transaction, before the idle sessions go): spent time on codes, and the
    devices and codes of sessions idle since before ``idle_cutoff``."""
    db.execute("DELETE FROM device_codes WHERE expires_at <= ?", (now(),))
    idle = "SELECT id FROM sessions WHERE seen_at < ?"
    db.execute(f"DELETE FROM devices WHERE session_id IN ({idle})", (idle_cutoff,))
    db.execute(f"DELETE FROM device_codes WHERE session_id IN ({idle})", (idle_cutoff,))


def move_devices(db: sqlite3.Connection, fresh: str, old: str) -> None:
    """The renewal's part: the devices and the code follow the session to its fresh id."""
    db.execute("UPDATE devices SET session_id = ? WHERE session_id = ?", (fresh, old))
    db.execute("UPDATE device_codes SET session_id = ? WHERE session_id = ?", (fresh, old))


class SQLiteDevices:
    if TYPE_CHECKING:  # the store's own, which this mixin uses
        options: StoreOptions

        async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T: ...

        def _live(self, db: sqlite3.Connection, session_id: str, *, accepted: bool = False) -> Any: ...

    async def device_code(self, session_id: str, code: str, ttl: float) -> str:
        expires = now(-ttl)

        def store(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute("DELETE FROM device_codes WHERE session_id = ?", (session_id,))
                sql = "INSERT INTO device_codes (code_hash, session_id, expires_at) VALUES (?, ?, ?)"
                db.execute(sql, (digest(code), session_id, expires))

        await self._call(store)
        return expires

    async def link_device(self, code: str, secret: str, label: str) -> str | None:
        device_id, stamp = secrets.token_urlsafe(12), now()

        def link(db: sqlite3.Connection) -> str | None:
            with transaction(db):
                found = db.execute(
                    "DELETE FROM device_codes WHERE code_hash = ? AND expires_at > ? RETURNING session_id",
                    (digest(code), stamp),
                ).fetchone()
                if found is None or self._live(db, found[0]) is None:
                    return None
                db.execute(
                    "INSERT INTO devices (id, session_id, secret_hash, label, created_at, seen_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (device_id, found[0], digest(secret), label, stamp, stamp),
                )
                return str(found[0])

        return await self._call(link)

    async def device_session(self, secret: str) -> tuple[Session, str] | None:
        def find(db: sqlite3.Connection) -> tuple[Session, str] | None:
            sql = "SELECT id, session_id, seen_at FROM devices WHERE secret_hash = ?"
            device = db.execute(sql, (digest(secret),)).fetchone()
            if device is None:
                return None
            row = self._live(db, device[1])
            if row is None:
                return None
            if device[2] < now(self.options.touch_after):
                db.execute("UPDATE devices SET seen_at = ? WHERE id = ?", (now(), device[0]))
            return Session(row[0], row[1], bool(row[2]), row[3], bool(row[5])), str(device[0])

        return await self._call(find)

    async def devices(self, session_id: str) -> list[Device]:
        def read(db: sqlite3.Connection) -> list[Device]:
            first = db.execute("SELECT created_at, seen_at FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if first is None:
                return []
            sql = "SELECT id, label, created_at, seen_at FROM devices WHERE session_id = ? ORDER BY created_at, id"
            others = db.execute(sql, (session_id,)).fetchall()
            return [Device(FIRST_DEVICE, "", first[0], first[1]), *(Device(*row) for row in others)]

        return await self._call(read)

    async def detach_device(self, session_id: str, device_id: str) -> bool:
        sql = "DELETE FROM devices WHERE id = ? AND session_id = ?"
        return await self._call(lambda db: db.execute(sql, (device_id, session_id)).rowcount) > 0
