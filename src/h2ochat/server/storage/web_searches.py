"""Web searches (docs/protocol.md section 18): what the store keeps of each search, and which answer used it.

A search is stored when it ends, owned by the session that ran it, in its conversation (deleted
with it); ``data`` is its JSON (progress, sources, the passages the model read). The answer that
used it is set when the answer is stored, so a conversation's reads give each answer its sources.
``WEB_SEARCHES_SCHEMA`` is migration ``014_web_searches`` on both databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["WEB_SEARCHES_SCHEMA", "StoredSearch", "WebSearches"]

WEB_SEARCHES_SCHEMA = """
CREATE TABLE web_searches (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    prompt TEXT NOT NULL,
    data TEXT NOT NULL,
    answer_id TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX web_searches_by_conversation ON web_searches (conversation_id, answer_id);
"""


@dataclass(frozen=True)
class StoredSearch:
    id: str
    conversation_id: str
    prompt: str
    data: str  # JSON: {"events": [...], "sources": [...], "context": "..."}
    answer_id: str | None
    created_at: str


class WebSearches(Protocol):
    """Web searches, a part of the server's database (:class:`~h2ochat.server.storage.Store`)."""

    async def save_web_search(self, search: StoredSearch, session_id: str) -> None:
        """Store a finished search of the session's conversation."""
        ...

    async def web_search(self, search_id: str, session_id: str) -> StoredSearch | None:
        """The session's search by id; None for another session's or an unknown one alike."""
        ...

    async def attach_web_search(self, search_id: str, answer_id: str) -> None:
        """Name the answer that used the search (its sources are then read with the conversation)."""
        ...

    async def answer_searches(self, conversation_id: str) -> list[StoredSearch]:
        """The searches of the conversation that an answer used."""
        ...
