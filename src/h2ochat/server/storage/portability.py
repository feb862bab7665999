"""Export and import (docs/protocol.md section 16): what the store does for them.

An export reads every conversation of a session with its whole tree in one statement; an import
writes conversations of the export format (:mod:`h2ochat.protocol.export`) under new ids, all of
them in one transaction or none. Each imported conversation records the key of its source (a digest,
:func:`~h2ochat.protocol.export.conversation_key`) in ``imports``, so importing the same file again
skips what is already there; deleting the conversation deletes its record (importing it then brings
it back). ``IMPORTS_SCHEMA`` is migration ``012_imports`` on both databases.

:class:`Portability` is the part of :class:`~h2ochat.server.storage.Store` that does this;
``sqlite_portability`` and ``postgres_portability`` implement it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from h2ochat.protocol.export import ExportConversation

if TYPE_CHECKING:  # the package imports this module to build Store: the other way only for types
    from h2ochat.server.storage import Conversation, MessageRow

__all__ = ["IMPORTS_SCHEMA", "Imported", "Portability", "conversation_row", "export_sql", "message_rows", "trees"]

# Keyed by conversation: a record goes with its conversation (deleted with it, moved with its session).
IMPORTS_SCHEMA = """
CREATE TABLE imports (
    conversation_id TEXT PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    source_key TEXT NOT NULL,
    imported_at TEXT NOT NULL
);
CREATE INDEX imports_by_key ON imports (source_key)
"""

# An answer still being written when it was exported cannot go on here: it arrives interrupted.
_CUT = "The answer was still being written when it was exported"


@dataclass(frozen=True)
class Imported:
    conversations: list[str]  # the new ids, in the file's order
    skipped: int  # conversations already imported into this session (or twice in the file)


def conversation_row(conversation_id: str, session_id: str, source: ExportConversation) -> tuple[Any, ...]:
    """The ``conversations`` row, in the order (id, session_id, model, title, created_at, updated_at,
    settings, root_id, active_id)."""
    return (
        *(conversation_id, session_id, source.model, source.title, source.created_at, source.updated_at),
        *(json.dumps(source.settings), source.messages[0].id, source.active_id),
    )


def message_rows(conversation_id: str, source: ExportConversation) -> list[tuple[Any, ...]]:
    """The ``messages`` rows, positions in the file's order, in the order (conversation_id, id, parent_id,
    position, role, content, status, finish_reason, interruption, generated_tokens, created_at, updated_at,
    left_out, score)."""
    rows = []
    for position, m in enumerate(source.messages):
        generating = m.status == "generating"
        status, interruption = ("interrupted", _CUT) if generating else (m.status, m.interruption)
        rows.append(
            (
                *(conversation_id, m.id, m.parent, position, m.role, m.content, status, m.finish_reason),
                *(interruption, m.generated_tokens, m.created_at, m.updated_at, m.left_out, m.score),
            )
        )
    return rows


def export_sql(session_placeholder: str) -> str:
    """Every conversation of a session with its tree, as ``SELECT_TREE`` reads one: the oldest first."""
    from h2ochat.server.storage import SELECT_TREE

    head = SELECT_TREE.split(" WHERE ")[0]
    return f"{head} WHERE c.session_id = {session_placeholder} ORDER BY c.created_at, c.id, m.position"


def trees(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Conversation, list[MessageRow]]]:
    """The rows of :func:`export_sql`, one conversation's after another, as ``tree_of`` reads each."""
    from h2ochat.server.storage import tree_of

    groups: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(tuple(row))
    return [tree for group in groups.values() if (tree := tree_of(group)) is not None]


class Portability(Protocol):
    """Export and import, a part of the server's database (:class:`~h2ochat.server.storage.Store`)."""

    async def export_conversations(self, session_id: str) -> list[tuple[Conversation, list[MessageRow]]]:
        """Every conversation of the session with its whole tree (messages in the order they were
        created), the oldest conversation first, read in one statement."""
        ...

    async def import_conversations(
        self, session_id: str, conversations: Sequence[tuple[str, ExportConversation]], limit: int = 0
    ) -> Imported:
        """Add each (source key, conversation) not imported into the session before, under a new id, in
        one transaction. Raises :class:`~h2ochat.server.storage.SessionGone` for a session not live and
        :class:`~h2ochat.server.storage.TooManyConversations` past ``limit`` (0: no limit): then nothing
        is written."""
        ...
