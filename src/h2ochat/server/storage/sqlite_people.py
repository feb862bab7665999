"""People on SQLite (:mod:`.people`): a mixin of :class:`~h2ochat.server.storage.sqlite.SQLiteStore`."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from h2ochat.server.storage import Session, StoreOptions, now
from h2ochat.server.storage.people import ApiKey, Login, Person
from h2ochat.server.storage.sqlite_schema import transaction
from h2ochat.server.storage.usage import PersonUsage, day

__all__ = ["SQLitePeople", "forget_usage", "keep_people_seen"]

T = TypeVar("T")
_KEY_COLUMNS = "id, name, created_at, last_used_at, revoked_at"


def keep_people_seen(db: sqlite3.Connection, halfway: str) -> None:
    """The upkeep's part (in its transaction, before the idle sessions go): people's sessions never idle
    out; those unused since ``halfway`` through the idle time are marked seen, the others left alone."""
    sql = "UPDATE sessions SET seen_at = ? WHERE seen_at < ? AND id IN (SELECT session_id FROM people)"
    db.execute(sql, (now(), halfway))


def forget_usage(db: sqlite3.Connection, idle_cutoff: str) -> None:
    """The upkeep's part (in its transaction, before the idle sessions go): their use goes with them."""
    db.execute("DELETE FROM usage WHERE session_id IN (SELECT id FROM sessions WHERE seen_at < ?)", (idle_cutoff,))


class SQLitePeople:
    if TYPE_CHECKING:  # the store's own, which this mixin uses
        options: StoreOptions

        async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T: ...

        def _live(self, db: sqlite3.Connection, session_id: str, *, accepted: bool = False) -> Any: ...

    async def person_session(self, login: str, name: str) -> tuple[Person, Session]:
        def find(db: sqlite3.Connection) -> tuple[Person, Session]:
            with transaction(db):  # a new person and their session are made together, or not at all
                return self._person(db, login, name)

        return await self._call(find)

    def _person(self, db: sqlite3.Connection, login: str, name: str) -> tuple[Person, Session]:
        """The person and their session, made the first time; on the database thread."""
        sql = "SELECT id, name, session_id, seen_at FROM people WHERE login = ?"
        row = db.execute(sql, (login,)).fetchone()
        if row is None:
            row = (secrets.token_urlsafe(12), name, secrets.token_urlsafe(32), now())
            db.execute(
                "INSERT INTO people (id, login, name, session_id, created_at, seen_at) VALUES (?, ?, ?, ?, ?, ?)",
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
        person = Person(row[0], login, row[1], row[2])
        return person, Session(live[0], live[1], bool(live[2]), live[3], bool(live[5]))

    async def session_person(self, session_id: str) -> Person | None:
        sql = "SELECT id, login, name, session_id FROM people WHERE session_id = ?"
        row = await self._call(lambda db: db.execute(sql, (session_id,)).fetchone())
        return None if row is None else Person(*row)

    async def merge_session(self, old: str, into: str) -> None:
        def merge(db: sqlite3.Connection) -> None:
            with transaction(db):
                for table in ("conversations", "shares", "web_searches"):
                    db.execute(f"UPDATE {table} SET session_id = ? WHERE session_id = ?", (into, old))
                db.execute(  # the welcome modal, accepted in this browser, stays accepted
                    "UPDATE sessions SET ethics_accepted_at = (SELECT ethics_accepted_at FROM sessions WHERE id = ?) "
                    "WHERE id = ? AND ethics_accepted_at IS NULL",
                    (old, into),
                )
                db.execute("DELETE FROM usage WHERE session_id = ?", (old,))  # an anonymous count, not the person's

        await self._call(merge)

    async def begin_login(self, state: str, login: Login, ttl: float) -> None:
        def begin(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute("DELETE FROM logins WHERE expires_at <= ?", (now(),))
                db.execute(
                    "INSERT INTO logins (state, nonce, verifier, next, session_id, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (state, login.nonce, login.verifier, login.next, login.session_id, now(-ttl)),
                )

        await self._call(begin)

    async def take_login(self, state: str) -> Login | None:
        sql = "DELETE FROM logins WHERE state = ? AND expires_at > ? RETURNING nonce, verifier, next, session_id"
        row = await self._call(lambda db: db.execute(sql, (state, now())).fetchone())
        return None if row is None else Login(*row)

    async def create_api_key(self, login: str, name: str, key_hash: str) -> ApiKey:
        key = ApiKey(secrets.token_urlsafe(9), name, now(), None, None)

        def create(db: sqlite3.Connection) -> ApiKey:
            with transaction(db):
                person, _ = self._person(db, login, "")
                db.execute(
                    "INSERT INTO api_keys (id, person_id, name, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                    (key.id, person.id, name, key_hash, key.created_at),
                )
            return key

        return await self._call(create)

    async def api_keys(self, login: str) -> list[ApiKey]:
        sql = (
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE person_id = (SELECT id FROM people WHERE login = ?) "
            "ORDER BY created_at, id"
        )
        rows = await self._call(lambda db: db.execute(sql, (login,)).fetchall())
        return [ApiKey(*row) for row in rows]

    async def revoke_api_key(self, login: str, key_id: str) -> bool:
        sql = (
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL "
            "AND person_id = (SELECT id FROM people WHERE login = ?)"
        )
        return bool(await self._call(lambda db: db.execute(sql, (now(), key_id, login)).rowcount))

    async def api_key_person(self, key_hash: str) -> tuple[Person, Session, str] | None:
        def find(db: sqlite3.Connection) -> tuple[Person, Session, str] | None:
            sql = (
                "SELECT k.id, k.last_used_at, p.login FROM api_keys AS k JOIN people AS p ON p.id = k.person_id "
                "WHERE k.key_hash = ? AND k.revoked_at IS NULL"
            )
            row = db.execute(sql, (key_hash,)).fetchone()
            if row is None:
                return None
            with transaction(db):
                if row[1] is None or row[1] < now(self.options.touch_after):
                    db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now(), row[0]))
                person, session = self._person(db, row[2], "")
            return person, session, str(row[0])

        return await self._call(find)

    async def record_usage(self, session_id: str, messages: int, tokens: int) -> None:
        sql = (
            "INSERT INTO usage (session_id, day, messages, tokens) VALUES (?, ?, ?, ?) ON CONFLICT (session_id, day) "
            "DO UPDATE SET messages = messages + excluded.messages, tokens = tokens + excluded.tokens"
        )
        await self._call(lambda db: db.execute(sql, (session_id, day(), messages, tokens)))

    async def tokens_today(self, session_id: str) -> int:
        sql = "SELECT tokens FROM usage WHERE session_id = ? AND day = ?"
        row = await self._call(lambda db: db.execute(sql, (session_id, day())).fetchone())
        return int(row[0]) if row else 0

    async def messages_total(self, session_id: str) -> int:
        sql = "SELECT coalesce(sum(messages), 0) FROM usage WHERE session_id = ?"
        return int((await self._call(lambda db: db.execute(sql, (session_id,)).fetchone()))[0])

    async def usage(self, since: str) -> list[PersonUsage]:
        sql = (
            "SELECT p.login, p.name, coalesce(sum(u.messages), 0), coalesce(sum(u.tokens), 0), "
            "(SELECT count(*) FROM conversations AS c WHERE c.session_id = p.session_id), p.seen_at "
            "FROM people AS p LEFT JOIN usage AS u ON u.session_id = p.session_id AND u.day >= ? "
            "GROUP BY p.id ORDER BY 4 DESC, 3 DESC, p.login"
        )
        rows = await self._call(lambda db: db.execute(sql, (since,)).fetchall())
        return [PersonUsage(*row) for row in rows]
