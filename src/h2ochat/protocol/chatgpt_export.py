"""A ChatGPT export's ``conversations.json`` read as h2ochat conversations (docs/protocol.md section 16).

ChatGPT keeps each conversation as a ``mapping`` of nodes (``id``, ``message`` or null, ``parent``,
``children``) with ``current_node``, the leaf shown. The tree becomes ours with its branches:

- nodes without a message, with an empty text, or from a tool (and system messages) carry no turn of
  the conversation: they are left out and their children hang from their nearest kept ancestor;
- the first non-empty system message before any user message becomes the system prompt (the root);
- an answer made of several assistant nodes in a row (a tool call between) is one answer, joined by a
  blank line, where the first has no other child;
- the active branch ends at ``current_node``'s nearest kept node.

Text is the ``parts`` that are strings (images and other attachments are not imported), or ``text``
for content types that have it. Times are the nodes' ``create_time`` (the conversation's when null).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec

from h2ochat.protocol.export import MAX_TITLE, ExportConversation, ExportMessage, ImportLimits, ImportRefused, validate

__all__ = ["from_chatgpt", "looks_like_chatgpt"]


class _Author(msgspec.Struct):
    role: str = ""


class _Content(msgspec.Struct):
    content_type: str = "text"
    parts: list[Any] | None = None
    text: str | None = None


class _Message(msgspec.Struct):
    author: _Author = msgspec.field(default_factory=_Author)
    content: _Content = msgspec.field(default_factory=_Content)
    create_time: float | None = None


class _Node(msgspec.Struct):
    id: str = ""
    message: _Message | None = None
    parent: str | None = None
    children: list[str] = []


class _Conversation(msgspec.Struct):
    mapping: dict[str, _Node]
    title: str | None = None
    create_time: float | None = None
    update_time: float | None = None
    current_node: str | None = None


def looks_like_chatgpt(raw: bytes) -> bool:
    """A JSON list at the top: ChatGPT's conversations.json (h2ochat's export is an object)."""
    return raw.lstrip()[:1] == b"["


def from_chatgpt(raw: bytes, model: str, limits: ImportLimits) -> list[tuple[str, ExportConversation]]:
    """Each conversation with its import key (a digest of its source); ``model`` is the one they are
    continued with (ChatGPT's models are not this server's). :class:`ImportRefused` for a file that is
    not a ChatGPT export."""
    try:
        source = msgspec.json.decode(raw, type=list[msgspec.Raw])
    except msgspec.DecodeError as exc:
        raise ImportRefused(f"The file is not a ChatGPT conversations.json: {exc}") from None
    if len(source) > limits.conversations:
        raise ImportRefused(
            f"The file holds {len(source)} conversations; this server imports at most {limits.conversations} "
            "at once (max_import_conversations): split it",
            413,
        )
    converted = []
    for index, item in enumerate(source):
        try:
            conversation = msgspec.json.decode(item, type=_Conversation)
        except msgspec.DecodeError as exc:
            raise ImportRefused(f"ChatGPT conversation {index} is malformed: {exc}") from None
        key = "chatgpt:" + hashlib.sha256(bytes(item)).hexdigest()
        converted.append((key, _convert(conversation, index, model, key)))
    validate([conversation for _, conversation in converted], limits)
    return converted


def _time(seconds: float | None, fallback: str) -> str:
    if seconds is None:
        return fallback
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(message: _Message) -> str:
    content = message.content
    if content.parts is not None:
        return "\n".join(part for part in content.parts if isinstance(part, str)).strip()
    return (content.text or "").strip()


def _convert(source: _Conversation, index: int, model: str, key: str) -> ExportConversation:
    created = _time(source.create_time, "1970-01-01T00:00:00.000Z")
    roots = [node_id for node_id, node in source.mapping.items() if node.parent not in source.mapping]
    if len(roots) != 1:
        raise ImportRefused(f"ChatGPT conversation {index}: its mapping has {len(roots)} roots, not one")
    # Message ids are UUIDs, as the server's are, and the same for the same source and node.
    ids = _Ids(key)
    root = ExportMessage(ids("root"), None, "system", "", created, created)
    messages = [root]
    kept: dict[str, str] = {}  # a ChatGPT node id: the id of the message that holds its text
    stack: list[tuple[str, str, bool]] = [(roots[0], root.id, False)]
    while stack:
        node_id, parent, only_child = stack.pop()
        node = source.mapping.get(node_id)
        if node is None or node_id in kept:  # a child named twice, or a cycle: visited once
            continue
        here = _place(node, ids(node_id), parent, only_child, messages, created)
        kept[node_id] = here
        # Reversed onto the stack: the children are visited, and numbered, in ChatGPT's order.
        alone = len(node.children) == 1
        stack.extend((child, here, alone) for child in reversed(node.children))
    leaf = kept.get(source.current_node or "", messages[-1].id)
    title = (source.title or "").strip()[:MAX_TITLE] or "Imported chat"
    updated = _time(source.update_time, created)
    return ExportConversation(f"chatgpt-{index}", title, model, created, updated, leaf, messages)


class _Ids:
    def __init__(self, key: str) -> None:
        self.namespace = uuid.uuid5(uuid.NAMESPACE_URL, key)

    def __call__(self, node_id: str) -> str:
        return str(uuid.uuid5(self.namespace, node_id))


def _place(node: _Node, ours: str, parent: str, only_child: bool, messages: list[ExportMessage], created: str) -> str:
    """Add the node's message under ``parent`` as ``ours`` (or fold it into the parent) and return the
    id of the message that stands for it; ``only_child``: the node is its ChatGPT parent's only child."""
    message = node.message
    text = _text(message) if message is not None else ""
    role = message.author.role if message is not None else ""
    if message is None or not text or role not in ("system", "user", "assistant"):
        return parent
    if role == "system":
        root = messages[0]
        if parent == root.id and not root.content:
            root.content = text
        return parent
    stamp = _time(message.create_time, created)
    previous = messages[-1] if messages[-1].id == parent else None  # preorder: a parent is the last added
    if only_child and previous is not None and previous.role == role == "assistant":
        previous.content += "\n\n" + text
        previous.updated_at = stamp
        return parent
    messages.append(ExportMessage(ours, parent, "user" if role == "user" else "assistant", text, stamp, stamp))
    return ours
