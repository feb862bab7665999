"""Shared links on SQLite (:mod:`.shares`): a mixin of :class:`~h2ochat.server.storage.sqlite.SQLiteStore`.

Each method that must hold together runs as one function on the database thread inside
``BEGIN IMMEDIATE … COMMIT`` (the store's ``_call`` and ``transaction``), as the store's own do.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from h2ochat.server.storage import MessageRow, TooManyConversations, now
from h2ochat.server.storage.shares import SHARE_COLUMNS, SHARE_MESSAGE_COLUMNS, Share, Snapshot, TooManyShares
from h2ochat.server.storage.sqlite_schema import transaction

__all__ = ["SQLiteShares", "forget_shares"]

T = TypeVar("T")

LIVE = "(expires_at IS NULL OR expires_at > ?)"
_SELECT_SHARE = f"SELECT {', '.join(SHARE_COLUMNS)} FROM shares"
# One statement for every lookup: a share and its messages, or no row, whatever made it missing.
_SELECT_SHARED = (
    f"SELECT {', '.join('s.' + c for c in SHARE_COLUMNS)}, "
    f"{', '.join(c if c == '0' else 'm.' + c for c in SHARE_MESSAGE_COLUMNS)} "
    "FROM shares AS s LEFT JOIN share_messages AS m ON m.share_id = s.id "
    "WHERE s.id = ? AND (s.expires_at IS NULL OR s.expires_at > ?) ORDER BY m.position"
)
_INSERT_SHARE = (
    "INSERT INTO shares (id, session_id, conversation_id, digest, title, model, root_id, leaf_id, created_at, "
    "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_SHARE_MESSAGE = (
    "INSERT INTO share_messages (share_id, position, id, parent_id, role, content, status, finish_reason, "
    "interruption, generated_tokens, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_COPY_MESSAGES = (
    "INSERT INTO messages (conversation_id, id, parent_id, position, role, content, status, finish_reason, "
    "interruption, generated_tokens, created_at, updated_at) SELECT ?, id, parent_id, position, role, content, "
    "status, finish_reason, interruption, generated_tokens, created_at, updated_at FROM share_messages "
    "WHERE share_id = ?"
)


def forget_shares(db: sqlite3.Connection, idle_cutoff: str) -> None:
    """The upkeep's part (in its transaction, before the idle sessions go): shares past their expiry,
    and those of sessions idle since before ``idle_cutoff``, whose owner could no longer revoke them."""
    db.execute("DELETE FROM shares WHERE expires_at <= ?", (now(),))
    db.execute("DELETE FROM shares WHERE session_id IN (SELECT id FROM sessions WHERE seen_at < ?)", (idle_cutoff,))


class SQLiteShares:
    if TYPE_CHECKING:  # the store's own, which this mixin uses

        async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T: ...

    async def share(self, session_id: str, snapshot: Snapshot, limit: int = 0) -> str:
        digest, stamp = snapshot.digest(), now()
        days = snapshot.expires_in_days
        expires = now(-days * 86400.0) if days else None

        def make(db: sqlite3.Connection) -> str:
            with transaction(db):
                # An expired share of the same snapshot makes way for a new one (it is no longer readable).
                gone = "DELETE FROM shares WHERE session_id = ? AND digest = ? AND expires_at <= ?"
                db.execute(gone, (session_id, digest, stamp))
                found = db.execute("SELECT id FROM shares WHERE session_id = ? AND digest = ?", (session_id, digest))
                existing = found.fetchone()
                if existing is not None:
                    return str(existing[0])
                if limit:
                    (count,) = db.execute(
                        f"SELECT count(*) FROM shares WHERE session_id = ? AND {LIVE}", (session_id, stamp)
                    ).fetchone()
                    if count >= limit:
                        raise TooManyShares(limit)
                share_id = secrets.token_urlsafe(16)
                root, leaf, messages = snapshot.rows(share_id)
                values = (snapshot.conversation_id, digest, snapshot.title, snapshot.model, root, leaf, stamp, expires)
                db.execute(_INSERT_SHARE, (share_id, session_id, *values))
                db.executemany(_INSERT_SHARE_MESSAGE, messages)
                return share_id

        return await self._call(make)

    async def shared(self, share_id: str) -> tuple[Share, list[MessageRow]] | None:
        rows = await self._call(lambda db: db.execute(_SELECT_SHARED, (share_id, now())).fetchall())
        if not rows:
            return None
        split = len(SHARE_COLUMNS)
        messages = [MessageRow(*row[split:]) for row in rows if row[split] is not None]
        return Share(*rows[0][:split]), messages

    async def shares(self, session_id: str) -> list[Share]:
        sql = f"{_SELECT_SHARE} WHERE session_id = ? AND {LIVE} ORDER BY created_at DESC, id"
        rows = await self._call(lambda db: db.execute(sql, (session_id, now())).fetchall())
        return [Share(*row) for row in rows]

    async def revoke_share(self, share_id: str, session_id: str) -> bool:
        sql = f"DELETE FROM shares WHERE id = ? AND session_id = ? AND {LIVE}"
        return await self._call(lambda db: db.execute(sql, (share_id, session_id, now())).rowcount) > 0

    async def continue_share(self, share_id: str, session_id: str, model: str, limit: int = 0) -> str | None:
        conversation_id, stamp = secrets.token_hex(12), now()

        def copy(db: sqlite3.Connection) -> str | None:
            with transaction(db):
                if limit:
                    (count,) = db.execute(
                        "SELECT count(*) FROM conversations WHERE session_id = ?", (session_id,)
                    ).fetchone()
                    if count >= limit:
                        raise TooManyConversations(limit)
                made = db.execute(
                    "INSERT INTO conversations (id, session_id, model, title, created_at, updated_at, root_id, "
                    f"active_id) SELECT ?, ?, ?, title, ?, ?, root_id, leaf_id FROM shares WHERE id = ? AND {LIVE}",
                    (conversation_id, session_id, model, stamp, stamp, share_id, stamp),
                )
                if not made.rowcount:
                    return None
                db.execute(_COPY_MESSAGES, (conversation_id, share_id))
                return conversation_id

        return await self._call(copy)
