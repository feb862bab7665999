"""Use per session and day (README "Quotas and use"): what ``tokens_per_day`` and the admins' usage view read.

A row per session and UTC day holds the messages answered and the tokens generated. It is written only
where it is read: for a person (the usage view lists people), and for any session when
``tokens_per_day`` is set; an anonymous session on a server without that quota costs no statement.
A person's session never idles out, so their rows stay; an idle anonymous session's go with it.

:class:`Usage` is the part of :class:`~h2ochat.server.storage.Store` that does this; ``sqlite_people``
and ``postgres_people`` implement it, and ``USAGE_SCHEMA`` is migration ``017_usage`` on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

__all__ = ["USAGE_SCHEMA", "PersonUsage", "Usage", "day", "seconds_to_midnight"]

USAGE_SCHEMA = """
CREATE TABLE usage (
    session_id TEXT NOT NULL,
    day TEXT NOT NULL,
    messages INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    PRIMARY KEY (session_id, day)
)
"""


def day(days_ago: int = 0) -> str:
    """A UTC day as stored: ``2026-12-05``."""
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).strftime("%Y-%m-%d")


def seconds_to_midnight() -> int:
    """Seconds until the next UTC day, when a day's quota starts again (at least 1)."""
    moment = datetime.now(timezone.utc)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - moment).total_seconds()) + 1)


@dataclass(frozen=True)
class PersonUsage:
    login: str
    name: str
    messages: int
    tokens: int
    conversations: int  # held now, whatever the period
    last_seen: str


class Usage(Protocol):
    """Use, a part of the server's database (:class:`~h2ochat.server.storage.Store`)."""

    async def record_usage(self, session_id: str, messages: int, tokens: int) -> None:
        """Add to today's row of the session."""
        ...

    async def tokens_today(self, session_id: str) -> int:
        """Tokens generated for the session today (UTC)."""
        ...

    async def messages_total(self, session_id: str) -> int:
        """Messages answered for the session, every day together (``messages_before_login`` reads it)."""
        ...

    async def usage(self, since: str) -> list[PersonUsage]:
        """Every person's messages and tokens from the day ``since`` on (:func:`day`), their conversations
        and when they were last seen; the busiest first."""
        ...
