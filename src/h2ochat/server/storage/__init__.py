"""What the server keeps: sessions, conversations and their messages, behind one interface.

:class:`Store` names what the server does with its data (create a conversation,
begin an exchange, checkpoint an answer, finish it…), not the tables.
``open_store(db)`` picks the implementation from the ``db`` setting: a file
path, ``:memory:`` or ``sqlite:///path`` is SQLite (:mod:`.sqlite`).

An exchange (the user's message and the answer) is written when generation
starts, with the answer marked ``generating``; its text is saved every few
seconds while it grows, and once more, complete, when it ends. A crash in
between leaves it ``generating``; the next start marks such answers
``interrupted``, with the text saved last, so nothing stays half-done.
Every method that takes a ``session_id`` answers for that session's data
only: another session's conversation is treated exactly like a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

__all__ = ["Conversation", "MessageRow", "Session", "Store", "now", "open_store"]


def now() -> str:
    """The current time as stored: ISO 8601 in UTC with milliseconds, e.g. ``2026-11-29T21:03:04.123Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Session:
    id: str
    active_model: str | None
    share_conversations: bool
    ethics_accepted_at: str | None


@dataclass(frozen=True)
class Conversation:
    id: str
    session_id: str
    model: str
    title: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class MessageRow:
    id: str
    position: int
    role: str
    content: str
    status: str  # generating | done | interrupted
    finish_reason: str | None
    interruption: str | None
    generated_tokens: int | None
    created_at: str
    updated_at: str


class Store(Protocol):
    """The server's database."""

    async def close(self) -> None: ...

    # Sessions
    async def session(self, session_id: str) -> Session | None: ...

    async def save_settings(self, session_id: str, active_model: str | None, share: bool, accepted: bool) -> None: ...

    # Conversations
    async def create_conversation(self, session_id: str, model: str) -> str:
        """A new conversation's id (24 hex characters, like chat-ui's ObjectIds)."""
        ...

    async def conversation(self, conversation_id: str, session_id: str) -> Conversation | None: ...

    async def conversations(self, session_id: str) -> list[Conversation]:
        """The session's conversations, the most recently updated first."""
        ...

    async def search_conversations(self, session_id: str, query: str) -> list[Conversation]:
        """The session's conversations whose title or any message holds ``query`` (ASCII case folded),
        the most recently updated first."""
        ...

    async def delete_conversation(self, conversation_id: str, session_id: str) -> bool: ...

    async def rename_conversation(self, conversation_id: str, session_id: str, title: str) -> bool: ...

    # Messages
    async def messages(self, conversation_id: str) -> list[MessageRow]:
        """A conversation's messages in order (the caller has checked ownership)."""
        ...

    async def begin_exchange(
        self, conversation_id: str, user_id: str, inputs: str, answer_id: str, replace_from: int | None
    ) -> None:
        """Store the user's message and an empty answer marked ``generating``, atomically.

        ``replace_from`` (a retry) first removes the messages from that position on.
        """
        ...

    async def save_partial(self, conversation_id: str, answer_id: str, content: str, generated_tokens: int) -> None:
        """A checkpoint: the text of an answer still being generated (it stays ``generating``)."""
        ...

    async def finish_answer(
        self,
        conversation_id: str,
        answer_id: str,
        content: str,
        *,
        finish_reason: str | None,
        interruption: str | None,
        generated_tokens: int,
    ) -> None:
        """Complete an answer: ``done`` with its finish reason, or ``interrupted`` with why."""
        ...


async def open_store(db: str) -> Store:
    """The store for the ``db`` setting, opened and migrated."""
    from h2ochat.server.storage.sqlite import SQLiteStore

    path = db.removeprefix("sqlite:///") if db.startswith("sqlite:///") else db
    return await SQLiteStore.open(path)
