"""Shared links on PostgreSQL (:mod:`.shares`): a mixin of :class:`~h2ochat.server.storage.postgres.PostgresStore`.

Steps that count before they insert lock the session's row first (as creating a conversation does),
so two replicas cannot both take the last place or make two shares of one snapshot; every time is
the database's.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from h2ochat.server.storage import MessageRow, TooManyConversations
from h2ochat.server.storage.postgres_connections import rows
from h2ochat.server.storage.postgres_sql import NOW, clock
from h2ochat.server.storage.shares import SHARE_COLUMNS, SHARE_MESSAGE_COLUMNS, Share, Snapshot, TooManyShares

if TYPE_CHECKING:
    from h2ochat.server.storage.postgres_connections import Connections

__all__ = ["PostgresShares", "forget_shares"]

LIVE = f"(expires_at IS NULL OR expires_at > {NOW})"
_SELECT_SHARE = f"SELECT {', '.join(SHARE_COLUMNS)} FROM shares"
# One statement for every lookup: a share and its messages, or no row, whatever made it missing.
_SELECT_SHARED = (
    f"SELECT {', '.join('s.' + c for c in SHARE_COLUMNS)}, "
    f"{', '.join(c if c == '0' else 'm.' + c for c in SHARE_MESSAGE_COLUMNS)} "
    "FROM shares AS s LEFT JOIN share_messages AS m ON m.share_id = s.id "
    f"WHERE s.id = $1 AND (s.expires_at IS NULL OR s.expires_at > {NOW}) ORDER BY m.position"
)
# $9: seconds until it expires, negated (clock() counts back), or NULL for none.
_INSERT_SHARE = (
    "INSERT INTO shares (id, session_id, conversation_id, digest, title, model, root_id, leaf_id, created_at, "
    f"expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {NOW}, "
    f"CASE WHEN $9::float8 IS NULL THEN NULL ELSE {clock('$9::float8')} END)"
)
_INSERT_SHARE_MESSAGE = (
    "INSERT INTO share_messages (share_id, position, id, parent_id, role, content, status, finish_reason, "
    "interruption, generated_tokens, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
    "$11, $12)"
)
_COPY_CONVERSATION = (
    "INSERT INTO conversations (id, session_id, model, title, created_at, updated_at, root_id, active_id) "
    f"SELECT $1, $2, $3, title, {NOW}, {NOW}, root_id, leaf_id FROM shares WHERE id = $4 AND {LIVE}"
)
_COPY_MESSAGES = (
    "INSERT INTO messages (conversation_id, id, parent_id, position, role, content, status, finish_reason, "
    "interruption, generated_tokens, created_at, updated_at) SELECT $1, id, parent_id, position, role, content, "
    "status, finish_reason, interruption, generated_tokens, created_at, updated_at FROM share_messages "
    "WHERE share_id = $2"
)


async def forget_shares(db: Any, session_idle: float) -> None:
    """The upkeep's part (in its transaction, before the idle sessions go): shares past their expiry,
    and those of sessions idle longer than ``session_idle`` seconds, whose owner could no longer revoke them."""
    await db.execute(f"DELETE FROM shares WHERE expires_at <= {NOW}")
    idle = f"SELECT id FROM sessions WHERE seen_at < {clock('$1')}"
    await db.execute(f"DELETE FROM shares WHERE session_id IN ({idle})", session_idle)


class PostgresShares:
    if TYPE_CHECKING:  # the store's own connections, which this mixin uses
        _db: Connections

    async def share(self, session_id: str, snapshot: Snapshot, limit: int = 0) -> str:
        digest, days = snapshot.digest(), snapshot.expires_in_days
        async with self._db.pooled() as db, db.transaction():
            await db.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
            # An expired share of the same snapshot makes way for a new one (it is no longer readable).
            gone = f"DELETE FROM shares WHERE session_id = $1 AND digest = $2 AND expires_at <= {NOW}"
            await db.execute(gone, session_id, digest)
            existing = await db.fetchval(
                "SELECT id FROM shares WHERE session_id = $1 AND digest = $2", session_id, digest
            )
            if existing is not None:
                return str(existing)
            if limit:
                count = await db.fetchval(f"SELECT count(*) FROM shares WHERE session_id = $1 AND {LIVE}", session_id)
                if count >= limit:
                    raise TooManyShares(limit)
            share_id = secrets.token_urlsafe(16)
            root, leaf, messages = snapshot.rows(share_id)
            values = (snapshot.conversation_id, digest, snapshot.title, snapshot.model, root, leaf)
            await db.execute(_INSERT_SHARE, share_id, session_id, *values, -days * 86400.0 if days else None)
            await db.executemany(_INSERT_SHARE_MESSAGE, messages)
            return share_id

    async def shared(self, share_id: str) -> tuple[Share, list[MessageRow]] | None:
        found = await self._db.all(_SELECT_SHARED, share_id)
        if not found:
            return None
        split = len(SHARE_COLUMNS)
        messages = [MessageRow(*row[split:]) for row in found if row[split] is not None]
        return Share(*found[0][:split]), messages

    async def shares(self, session_id: str) -> list[Share]:
        found = await self._db.all(
            f"{_SELECT_SHARE} WHERE session_id = $1 AND {LIVE} ORDER BY created_at DESC, id", session_id
        )
        return [Share(*row) for row in found]

    async def revoke_share(self, share_id: str, session_id: str) -> bool:
        sql = f"DELETE FROM shares WHERE id = $1 AND session_id = $2 AND {LIVE}"
        return await self._db.execute(sql, share_id, session_id) > 0

    async def continue_share(self, share_id: str, session_id: str, model: str, limit: int = 0) -> str | None:
        conversation_id = secrets.token_hex(12)
        async with self._db.pooled() as db, db.transaction():
            if limit:
                # The session's row is the lock: replicas creating for one session count in turn.
                await db.execute("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
                count = await db.fetchval("SELECT count(*) FROM conversations WHERE session_id = $1", session_id)
                if count >= limit:
                    raise TooManyConversations(limit)
            made = await db.execute(_COPY_CONVERSATION, conversation_id, session_id, model, share_id)
            if not rows(made):
                return None
            await db.execute(_COPY_MESSAGES, conversation_id, share_id)
        return conversation_id
