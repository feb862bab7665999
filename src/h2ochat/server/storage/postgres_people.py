"""People on PostgreSQL (:mod:`.people`): a mixin of :class:`~h2ochat.server.storage.postgres.PostgresStore`.

Nothing is cached in a replica: each request's person is looked up, so every replica serves a person
under the same session, made once however many replicas see them first at the same moment.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from h2ochat.server.storage import Session, StoreOptions
from h2ochat.server.storage.people import ApiKey, Login, Person
from h2ochat.server.storage.postgres_sql import NOW, clock
from h2ochat.server.storage.usage import PersonUsage, day

if TYPE_CHECKING:
    from h2ochat.server.storage.postgres_connections import Connections

__all__ = ["PostgresPeople", "forget_usage", "keep_people_seen"]

# One statement for a person seen before (the common case): the person, the use of both recorded at
# most once every $3 seconds, and the session. $1: the login; $2: the name ("" keeps the stored one).
_SEEN = (
    f"WITH person AS (UPDATE people SET name = CASE WHEN $2 = '' THEN name ELSE $2 END, seen_at = {NOW} "
    f"WHERE login = $1 AND (seen_at < {clock('$3')} OR ($2 <> '' AND name <> $2)) RETURNING id), "
    f"session AS (UPDATE sessions SET seen_at = {NOW} WHERE id = (SELECT session_id FROM people WHERE login = $1) "
    f"AND seen_at < {clock('$3')}) "
    "SELECT p.id, CASE WHEN $2 = '' THEN p.name ELSE $2 END, p.session_id, s.active_model, "
    "s.share_conversations, s.ethics_accepted_at, s.search_enabled "
    "FROM people AS p JOIN sessions AS s ON s.id = p.session_id WHERE p.login = $1"
)


# A live key's id and person, its use recorded at most once every $2 seconds. $1: the key's hash.
_KEY = (
    "WITH key AS (SELECT k.id, p.login, k.last_used_at IS NULL OR k.last_used_at < "
    f"{clock('$2')} AS stale FROM api_keys AS k JOIN people AS p ON p.id = k.person_id "
    "WHERE k.key_hash = $1 AND k.revoked_at IS NULL), "
    f"used AS (UPDATE api_keys SET last_used_at = {NOW} WHERE id = (SELECT id FROM key) AND (SELECT stale FROM key)) "
    "SELECT id, login FROM key"
)
_KEY_COLUMNS = "id, name, created_at, last_used_at, revoked_at"


async def keep_people_seen(db: Any, session_idle: float) -> None:
    """The upkeep's part (in its transaction, before the idle sessions go): people's sessions never idle
    out; those unused for half the idle time are marked seen, the others left alone."""
    sql = f"UPDATE sessions SET seen_at = {NOW} WHERE seen_at < {clock('$1')} AND id IN (SELECT session_id FROM people)"
    await db.execute(sql, session_idle / 2)


async def forget_usage(db: Any, session_idle: float) -> None:
    """The upkeep's part (in its transaction, before the idle sessions go): their use goes with them."""
    idle = f"SELECT id FROM sessions WHERE seen_at < {clock('$1')}"
    await db.execute(f"DELETE FROM usage WHERE session_id IN ({idle})", session_idle)


class PostgresPeople:
    if TYPE_CHECKING:  # the store's own, which this mixin uses
        _db: Connections
        options: StoreOptions

    async def person_session(self, login: str, name: str) -> tuple[Person, Session]:
        row = await self._db.one(_SEEN, login, name, self.options.touch_after)
        if row is None:  # first seen: the person and their session together, once across replicas
            async with self._db.pooled() as db, db.transaction():
                session_id = secrets.token_urlsafe(32)
                inserted = await db.fetchval(
                    "INSERT INTO people (id, login, name, session_id, created_at, seen_at) "
                    f"VALUES ($1, $2, $3, $4, {NOW}, {NOW}) ON CONFLICT (login) DO NOTHING RETURNING session_id",
                    secrets.token_urlsafe(12),
                    login,
                    name,
                    session_id,
                )
                if inserted is not None:
                    await db.execute(
                        f"INSERT INTO sessions (id, created_at, updated_at, seen_at) VALUES ($1, {NOW}, {NOW}, {NOW})",
                        session_id,
                    )
            row = await self._db.one(_SEEN, login, name, self.options.touch_after)
        if row is None:
            raise RuntimeError(f"the person {login!r} was stored but cannot be read back")
        return Person(row[0], login, row[1], row[2]), Session(row[2], row[3], row[4], row[5], row[6])

    async def session_person(self, session_id: str) -> Person | None:
        row = await self._db.one("SELECT id, login, name, session_id FROM people WHERE session_id = $1", session_id)
        return None if row is None else Person(row[0], row[1], row[2], row[3])

    async def merge_session(self, old: str, into: str) -> None:
        async with self._db.pooled() as db, db.transaction():
            for table in ("conversations", "shares", "web_searches"):
                await db.execute(f"UPDATE {table} SET session_id = $1 WHERE session_id = $2", into, old)
            await db.execute(  # the welcome modal, accepted in this browser, stays accepted
                "UPDATE sessions SET ethics_accepted_at = (SELECT ethics_accepted_at FROM sessions WHERE id = $1) "
                "WHERE id = $2 AND ethics_accepted_at IS NULL",
                old,
                into,
            )
            await db.execute("DELETE FROM usage WHERE session_id = $1", old)  # an anonymous count, not the person's

    async def begin_login(self, state: str, login: Login, ttl: float) -> None:
        async with self._db.pooled() as db, db.transaction():
            await db.execute(f"DELETE FROM logins WHERE expires_at <= {NOW}")
            await db.execute(
                "INSERT INTO logins (state, nonce, verifier, next, session_id, expires_at) "
                f"VALUES ($1, $2, $3, $4, $5, {clock('$6')})",
                state,
                login.nonce,
                login.verifier,
                login.next,
                login.session_id,
                -ttl,
            )

    async def take_login(self, state: str) -> Login | None:
        row = await self._db.one(
            f"DELETE FROM logins WHERE state = $1 AND expires_at > {NOW} RETURNING nonce, verifier, next, session_id",
            state,
        )
        return None if row is None else Login(row[0], row[1], row[2], row[3])

    async def create_api_key(self, login: str, name: str, key_hash: str) -> ApiKey:
        person, _ = await self.person_session(login, "")
        row = await self._db.one(
            f"INSERT INTO api_keys (id, person_id, name, key_hash, created_at) VALUES ($1, $2, $3, $4, {NOW}) "
            f"RETURNING {_KEY_COLUMNS}",
            secrets.token_urlsafe(9),
            person.id,
            name,
            key_hash,
        )
        assert row is not None  # an INSERT … RETURNING answers its row
        return ApiKey(*row)

    async def api_keys(self, login: str) -> list[ApiKey]:
        rows = await self._db.all(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE person_id = (SELECT id FROM people WHERE login = $1) "
            "ORDER BY created_at, id",
            login,
        )
        return [ApiKey(*row) for row in rows]

    async def revoke_api_key(self, login: str, key_id: str) -> bool:
        revoked = await self._db.execute(
            f"UPDATE api_keys SET revoked_at = {NOW} WHERE id = $1 AND revoked_at IS NULL "
            "AND person_id = (SELECT id FROM people WHERE login = $2)",
            key_id,
            login,
        )
        return revoked > 0

    async def api_key_person(self, key_hash: str) -> tuple[Person, Session, str] | None:
        row = await self._db.one(_KEY, key_hash, self.options.touch_after)
        if row is None:
            return None
        person, session = await self.person_session(str(row[1]), "")
        return person, session, str(row[0])

    async def record_usage(self, session_id: str, messages: int, tokens: int) -> None:
        await self._db.execute(
            "INSERT INTO usage (session_id, day, messages, tokens) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (session_id, day) DO UPDATE SET messages = usage.messages + excluded.messages, "
            "tokens = usage.tokens + excluded.tokens",
            session_id,
            day(),
            messages,
            tokens,
        )

    async def tokens_today(self, session_id: str) -> int:
        found = await self._db.value("SELECT tokens FROM usage WHERE session_id = $1 AND day = $2", session_id, day())
        return int(found or 0)

    async def messages_total(self, session_id: str) -> int:
        found = await self._db.value("SELECT coalesce(sum(messages), 0) FROM usage WHERE session_id = $1", session_id)
        return int(found or 0)

    async def usage(self, since: str) -> list[PersonUsage]:
        rows = await self._db.all(
            "SELECT p.login, p.name, coalesce(sum(u.messages), 0)::bigint, coalesce(sum(u.tokens), 0)::bigint, "
            "(SELECT count(*) FROM conversations AS c WHERE c.session_id = p.session_id), p.seen_at "
            "FROM people AS p LEFT JOIN usage AS u ON u.session_id = p.session_id AND u.day >= $1 "
            "GROUP BY p.id ORDER BY 4 DESC, 3 DESC, p.login",
            since,
        )
        return [PersonUsage(row[0], row[1], int(row[2]), int(row[3]), int(row[4]), row[5]) for row in rows]
