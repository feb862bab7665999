"""Shared links (docs/protocol.md section 14): what the store keeps of a conversation shared read-only.

A share is a snapshot: the active branch of a conversation copied, at the moment it is shared, into
rows of the share's own (``share_messages``), so that later edits, new messages or the deletion of
the conversation change nothing in it. Its messages get fresh ids, so nothing in a share names the
owner's conversation or its messages. The id is 128 random bits, URL-safe.

Sharing a snapshot already shared (the same title, model, branch and expiry, by :meth:`Snapshot.digest`)
gives the id it had while that share lives. A share ends when its owner revokes it (its rows are
deleted), when its expiry passes, or when its owner's session expires; every lookup is the same
statement whatever the reason a share is missing, so a revoked, expired or unknown id all read as
none.

:class:`Shares` is the part of :class:`~h2ochat.server.storage.Store` that does this;
``sqlite_shares`` and ``postgres_shares`` implement it, and ``SHARES_SCHEMA`` is migration
``008_shares`` on both databases.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the package imports this module to build Store: the other way only for types
    from h2ochat.server.storage import MessageRow

__all__ = [
    "SHARE_ID",
    "SHARES_SCHEMA",
    "SHARE_COLUMNS",
    "SHARE_MESSAGE_COLUMNS",
    "Share",
    "Shares",
    "Snapshot",
    "TooManyShares",
]

# What secrets.token_urlsafe(16) gives: the only form of id a share can have (today's chat-ui's are 7
# characters, its conversations' 24 hexadecimal ones, so the forms never overlap).
SHARE_ID = re.compile(r"[A-Za-z0-9_-]{22}")


class TooManyShares(Exception):
    """The session already holds the most live shares a session may have."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This session already has {limit} shared links, the most this server keeps per session; "
            "revoke some under Shared links (DELETE /api/shares/<id>) to share more"
        )
        self.limit = limit


@dataclass(frozen=True)
class Share:
    id: str
    conversation_id: str  # the owner's conversation it was taken from (it may be deleted since)
    title: str
    model: str
    root_id: str  # the snapshot's system root
    leaf_id: str  # the snapshot's last message
    created_at: str
    expires_at: str | None  # None: until revoked


@dataclass(frozen=True)
class Snapshot:
    """What is shared: a conversation's active branch, root first, as the route read it."""

    conversation_id: str
    title: str
    model: str
    branch: Sequence[MessageRow]
    expires_in_days: int | None = None

    def digest(self) -> str:
        """The same for the same content and expiry: what makes sharing an unchanged conversation again
        give the same link. The ids are in it too: two conversations with the same text are two shares."""
        content: list[Any] = [self.conversation_id, self.title, self.model, self.expires_in_days]
        content += [[m.id, m.role, m.content, m.status, m.finish_reason, m.interruption] for m in self.branch]
        return hashlib.sha256(json.dumps(content).encode()).hexdigest()

    def rows(self, share_id: str) -> tuple[str, str, list[tuple[Any, ...]]]:
        """The root's and the leaf's new ids, and the rows of ``share_messages`` (in its columns' order):
        every message under a fresh id, so that nothing in the share names the owner's messages."""
        if not self.branch:
            raise ValueError("a share holds at least the system root")
        fresh = {message.id: str(uuid.uuid4()) for message in self.branch}
        messages = [
            (
                *(share_id, position, fresh[m.id], fresh.get(m.parent_id or ""), m.role, m.content, m.status),
                *(m.finish_reason, m.interruption, m.generated_tokens, m.created_at, m.updated_at),
            )
            for position, m in enumerate(self.branch)
        ]
        return fresh[self.branch[0].id], fresh[self.branch[-1].id], messages


SHARE_COLUMNS = [column.name for column in fields(Share)]
# A share's messages read as MessageRow (storage), in its field order: no votes, nothing left out.
SHARE_MESSAGE_COLUMNS = [
    "id",
    "position",
    "role",
    "content",
    "status",
    "finish_reason",
    "interruption",
    "generated_tokens",
    "created_at",
    "updated_at",
    "0",
    "parent_id",
    "0",
]

# The same on both databases: times are ISO 8601 text, as every other table has them.
SHARES_SCHEMA = """
CREATE TABLE shares (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    title TEXT NOT NULL,
    model TEXT NOT NULL,
    root_id TEXT NOT NULL,
    leaf_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    UNIQUE (session_id, digest)
);
CREATE INDEX shares_by_expiry ON shares (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE share_messages (
    share_id TEXT NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    id TEXT NOT NULL,
    parent_id TEXT,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    status TEXT NOT NULL,
    finish_reason TEXT,
    interruption TEXT,
    generated_tokens INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (share_id, position)
)
"""


class Shares(Protocol):
    """Shared links, a part of the server's database (:class:`~h2ochat.server.storage.Store`)."""

    async def share(self, session_id: str, snapshot: Snapshot, limit: int = 0) -> str:
        """The id of a live share of ``snapshot``: the one made before for the same digest, else a new one.

        Raises :class:`TooManyShares` when the session holds ``limit`` live shares already (0: no limit).
        """
        ...

    async def shared(self, share_id: str) -> tuple[Share, list[MessageRow]] | None:
        """A live share with its messages (root first), read in one statement whoever asks; None for an
        id revoked, expired or never issued alike."""
        ...

    async def shares(self, session_id: str) -> list[Share]:
        """The session's live shares, the newest first."""
        ...

    async def revoke_share(self, share_id: str, session_id: str) -> bool:
        """Delete a live share of the session's; False when there is none by that id."""
        ...

    async def continue_share(self, share_id: str, session_id: str, model: str, limit: int = 0) -> str | None:
        """A new conversation of the session holding a copy of a live share (its branch active, on
        ``model``), made in one transaction; None when the share is not live.

        Raises :class:`~h2ochat.server.storage.TooManyConversations` past ``limit`` (0: no limit).
        """
        ...
