"""A stored conversation as today's chat-ui shows it: the document of ``GET /api/v2/conversations/<id>``
and of the create answer's ``conversation`` string (CHATUI-CURRENT.md sections 4 and 5).

Times become ``datetime`` so that the superjson envelope lists them as ``Date``s, as chat-ui's do.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import msgspec

from h2ochat.protocol.tree import Tree
from h2ochat.server.storage import Conversation, MessageRow

__all__ = ["conversation_document", "conversation_summary", "message_node", "moment"]

_ROLES = {"system": "system", "user": "user", "assistant": "assistant"}


def moment(stored: str) -> datetime | str:
    """A stored time (ISO 8601, UTC) as a ``datetime``; a text that is none stays as it is."""
    try:
        value = msgspec.convert(stored, datetime)
    except msgspec.ValidationError:
        return stored
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def conversation_document(conversation: Conversation, rows: list[MessageRow]) -> dict[str, Any]:
    """The whole tree with the conversation's fields, in chat-ui's names and order."""
    tree = Tree(rows)
    root = next((row for row in rows if row.id == conversation.root_id), rows[0] if rows else None)
    return {
        "messages": [message_node(row, tree) for row in rows],
        "title": conversation.title,
        "model": conversation.model,
        "preprompt": root.content if root is not None else "",
        "rootMessageId": conversation.root_id,
        "id": conversation.id,
        "updatedAt": moment(conversation.updated_at),
        "modelId": conversation.model,
        "shared": False,
        # h2ochat's: the leaf of the branch shown last, which chat-ui leaves to the page.
        "activeMessageId": conversation.active_id,
    }


def message_node(row: MessageRow, tree: Tree) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": row.id,
        "from": _ROLES.get(row.role, row.role),
        "content": row.content,
        "createdAt": moment(row.created_at),
        "updatedAt": moment(row.updated_at),
        "ancestors": tree.ancestors(row.id),
        "children": list(tree.children.get(row.id, [])),
    }
    if row.role == "assistant":
        node["interrupted"] = row.status == "interrupted" or row.finish_reason == "length"
        if row.status == "generating":
            node["generating"] = True  # h2ochat's: the answer is still being written
        if row.score:
            node["score"] = row.score
    return node


def conversation_summary(conversation: Conversation) -> dict[str, Any]:
    """A conversation in today's list: ``_id`` and ``id`` alike, since chat-ui sends both."""
    return {
        "_id": conversation.id,
        "id": conversation.id,
        "title": conversation.title,
        "updatedAt": moment(conversation.updated_at),
        "model": conversation.model,
        "modelId": conversation.model,
    }
