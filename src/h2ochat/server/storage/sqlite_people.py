"""People on SQLite (:mod:`.people`): a mixin of :class:`~h2ochat.server.storage.sqlite.SQLiteStore`."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from h2ochat.server.storage import Session, StoreOptions, now
from h2ochat.server.storage.people import Person
from h2ochat.server.storage.sqlite_schema import transaction

__all__ = ["SQLitePeople", "keep_people_seen"]

T = TypeVar("T")


def keep_people_seen(db: sqlite3.Connection, halfway: str) -> None:
    """The upkeep's part (in its transaction, before the idle sessions go): people's sessions never idle
    out; those unused since ``halfway`` through the idle time are marked seen, the others left alone."""
    sql = "UPDATE sessions SET seen_at = ? WHERE seen_at < ? AND id IN (SELECT session_id FROM people)"
    db.execute(sql, (now(), halfway))


class SQLitePeople:
    if TYPE_CHECKING:  # the store's own, which this mixin uses
        options: StoreOptions

        async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T: ...

        def _live(self, db: sqlite3.Connection, session_id: str, *, accepted: bool = False) -> Any: ...

    async def person_session(self, login: str, name: str) -> tuple[Person, Session]:
        def find(db: sqlite3.Connection) -> tuple[Person, Session]:
            sql = "SELECT id, name, session_id, seen_at FROM people WHERE login = ?"
            row = db.execute(sql, (login,)).fetchone()
            if row is None:
                with transaction(db):
                    row = (secrets.token_urlsafe(12), name, secrets.token_urlsafe(32), now())
                    db.execute(
                        "INSERT INTO people (id, login, name, session_id, created_at, seen_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (row[0], login, name, row[2], row[3], row[3]),
                    )
            elif (name and name != row[1]) or row[3] < now(self.options.touch_after):
                row = (row[0], name or row[1], row[2], now())
                db.execute("UPDATE people SET name = ?, seen_at = ? WHERE id = ?", (row[1], row[3], row[0]))
            live = self._live(db, row[2])
            if live is None:  # a new person's session (or one gone some way the upkeep does not go)
                stamp = now()
                db.execute(
                    "INSERT INTO sessions (id, created_at, updated_at, seen_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at",
                    (row[2], stamp, stamp, stamp),
                )
                live = self._live(db, row[2])
            return Person(row[0], login, row[1], row[2]), Session(
                live[0], live[1], bool(live[2]), live[3], bool(live[5])
            )

        return await self._call(find)
