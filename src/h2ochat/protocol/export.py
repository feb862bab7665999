"""The export format, version 1 (docs/protocol.md section 16): every conversation of a session, whole.

``{"format": "h2ochat-export", "version": 1, "exportedAt": …, "conversations": [...]}``: each
conversation with its whole tree, in the order its messages were created (parents first), so that a
file imported and exported again reads the same but for the ids of its conversations and its
``exportedAt``. Pure: this module encodes and decodes bytes and checks them; the server reads and
writes them (``server/chatui/portability.py``), a ChatGPT export is converted by :mod:`.chatgpt_export`.

:func:`validate` checks everything an import needs before anything is written, so a file is taken
whole or refused whole: one :class:`ImportRefused` says what was wrong, and where.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

import msgspec

from h2ochat.protocol.parameters import check_settings

__all__ = [
    "FORMAT",
    "MAX_TITLE",
    "VERSION",
    "Export",
    "ExportConversation",
    "ExportMessage",
    "ImportLimits",
    "ImportRefused",
    "branch",
    "conversation_key",
    "decode_export",
    "encode_export",
    "markdown",
    "safe_name",
    "validate",
]

FORMAT = "h2ochat-export"
VERSION = 1
ROLES = ("user", "assistant")
MAX_TITLE = 100  # as PATCH /conversation/<id> allows
MAX_MODEL = 200
# A message id as the server makes them (UUIDs) or any id of this shape; nothing that could be a path.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class ImportRefused(ValueError):
    """The file cannot be imported: the message says what was wrong and where. ``status`` is the HTTP
    status it answers (400 malformed, 413 over a limit)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ExportMessage(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    id: str
    parent: str | None  # None for the system root, the first message
    role: Literal["system", "user", "assistant"]
    content: str
    created_at: str
    updated_at: str
    status: Literal["done", "interrupted", "generating"] = "done"
    finish_reason: str | None = None
    interruption: str | None = None  # why an interrupted answer ended
    generated_tokens: int | None = None
    left_out: int = 0  # earlier messages the model could not read for this answer
    score: int = 0  # the person's vote on an answer: 1, -1 or 0


class ExportConversation(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    id: str
    title: str
    model: str
    created_at: str
    updated_at: str
    active_id: str  # the leaf of the branch the person last looked at
    messages: list[ExportMessage]  # the whole tree, root (the system prompt) first, parents before children
    settings: dict[str, Any] = {}


class Export(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    format: str
    version: int
    exported_at: str
    conversations: list[ExportConversation]


class _Header(msgspec.Struct, rename="camel"):
    """What is read first: an unknown format or version is refused before its content is looked at."""

    format: str = ""
    version: int = 0


class ImportLimits(msgspec.Struct, frozen=True):
    conversations: int = 1000  # per file
    messages: int = 1000  # per conversation, every branch counted
    chars: int = 1_000_000  # per message text
    bytes: int = 20 * 1024 * 1024  # the upload (a zip's JSON may unpack to 5 times as much)
    max_new_tokens: int | None = None  # the ceiling a conversation's settings are checked against


def encode_export(export: Export) -> bytes:
    """Indented JSON with a final newline: readable, and the same bytes for the same export."""
    return msgspec.json.format(msgspec.json.encode(export), indent=2) + b"\n"


def decode_export(raw: bytes, limits: ImportLimits) -> Export:
    """An export file, checked whole (:func:`validate`); :class:`ImportRefused` says what is wrong."""
    try:
        header = msgspec.json.decode(raw, type=_Header)
    except msgspec.DecodeError as exc:
        raise ImportRefused(f"The file is not an h2ochat export: {exc}") from None
    if header.format != FORMAT:
        raise ImportRefused(
            f'The file is not an h2ochat export: its "format" is {header.format!r}, not {FORMAT!r} '
            "(a ChatGPT export is its conversations.json)"
        )
    if header.version != VERSION:
        raise ImportRefused(
            f"The export is version {header.version}; this server reads version {VERSION}: "
            "import it into the h2ochat that made it, or a newer one"
        )
    try:
        export = msgspec.json.decode(raw, type=Export)
    except msgspec.ValidationError as exc:
        raise ImportRefused(f"The export is malformed: {exc}") from None
    validate(export.conversations, limits)
    return export


def validate(conversations: list[ExportConversation], limits: ImportLimits) -> None:
    """Raise :class:`ImportRefused` unless every conversation is a tree the store can hold as it is."""
    if len(conversations) > limits.conversations:
        raise ImportRefused(
            f"The file holds {len(conversations)} conversations; this server imports at most "
            f"{limits.conversations} at once (max_import_conversations): split it",
            413,
        )
    for index, conversation in enumerate(conversations):
        where = f"conversation {index} ({conversation.title[:40]!r})"
        _check_tree(conversation, where, limits)


def _check_tree(conversation: ExportConversation, where: str, limits: ImportLimits) -> None:
    if not 1 <= len(conversation.title) <= MAX_TITLE or not 1 <= len(conversation.model) <= MAX_MODEL:
        raise ImportRefused(f"{where}: the title must be 1 to {MAX_TITLE} characters, the model 1 to {MAX_MODEL}")
    try:
        conversation.settings = check_settings(conversation.settings, ceiling=limits.max_new_tokens)
    except ValueError as exc:
        raise ImportRefused(f"{where}: {exc}") from None
    messages = conversation.messages
    if len(messages) > limits.messages:
        raise ImportRefused(
            f"{where} holds {len(messages)} messages; this server keeps at most {limits.messages} "
            "in one conversation (max_messages)",
            413,
        )
    if not messages or messages[0].parent is not None or messages[0].role != "system":
        raise ImportRefused(f"{where}: its first message must be the system root (role system, parent null)")
    seen: dict[str, str] = {}
    for message in messages:
        if not _MESSAGE_ID.fullmatch(message.id) or message.id in seen:
            raise ImportRefused(f"{where}: message id {message.id[:70]!r} is malformed or repeated")
        if message is not messages[0] and (message.parent not in seen or message.role not in ROLES):
            raise ImportRefused(
                f"{where}: message {message.id!r} must be a user or assistant message whose parent comes before it"
            )
        if len(message.content) > limits.chars:
            raise ImportRefused(
                f"{where}: message {message.id!r} holds {len(message.content)} characters; "
                f"this server imports at most {limits.chars} per message (max_import_message_chars)",
                413,
            )
        if message.score not in (-1, 0, 1) or message.left_out < 0:
            raise ImportRefused(
                f"{where}: message {message.id!r} has a score other than -1, 0, 1 or a negative leftOut"
            )
        seen[message.id] = message.role
    if conversation.active_id not in seen:
        raise ImportRefused(f"{where}: activeId {conversation.active_id[:70]!r} is none of its messages")


def conversation_key(conversation: ExportConversation) -> str:
    """What makes importing the same conversation twice a no-op: a digest of all of it, id included."""
    return "h2ochat:" + hashlib.sha256(msgspec.json.encode(conversation)).hexdigest()


def branch(conversation: ExportConversation) -> list[ExportMessage]:
    """The active branch, root first."""
    by_id = {message.id: message for message in conversation.messages}
    path: list[ExportMessage] = []
    current: str | None = conversation.active_id
    while current is not None and current in by_id and len(path) <= len(by_id):
        path.append(by_id[current])
        current = by_id[current].parent
    return path[::-1]


def markdown(conversation: ExportConversation) -> str:
    """The active branch as the page's "Export as Markdown" writes it (static/messages.js), the system
    prompt added when there is one."""
    lines = [f"# {conversation.title}", "", f"Model: {conversation.model}", ""]
    path = branch(conversation)
    if path and path[0].content:
        lines += ["## System prompt", "", path[0].content, ""]
    for message in path[1:]:
        lines += [f"## {'You' if message.role == 'user' else 'Assistant'}", "", message.content, ""]
    return "\n".join(lines)


def safe_name(title: str, conversation_id: str) -> str:
    """A file name for a conversation's Markdown: its title reduced to a slug, then its id; no path in it."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "conversation"
    return f"{slug}-{re.sub(r'[^A-Za-z0-9]', '', conversation_id)[:32]}.md"
