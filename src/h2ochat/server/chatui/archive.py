"""The export's zip, made and read (docs/protocol.md section 16), for the routes and the command line.

Reading never trusts a zip's own sizes: a member is read in chunks and refused once it passes the
limit (a zip bomb stops there), names that climb out of the archive or are absolute are refused
though nothing is ever written to disk, and only the export's JSON (or ChatGPT's conversations.json)
is read; other members are left unread.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence

from h2ochat.protocol.chatgpt_export import from_chatgpt, looks_like_chatgpt
from h2ochat.protocol.export import (
    FORMAT,
    VERSION,
    Export,
    ExportConversation,
    ExportMessage,
    ImportLimits,
    ImportRefused,
    conversation_key,
    decode_export,
    encode_export,
    markdown,
    safe_name,
)
from h2ochat.server.storage import Conversation, MessageRow, now

__all__ = ["EXPORT_NAME", "read_import", "to_export", "write_zip"]

EXPORT_NAME = "h2ochat-export.json"
_CHATGPT_NAME = "conversations.json"
_MAX_MEMBERS = 10_000
_UNPACK_FACTOR = 5  # a zip's JSON may unpack to this many times the body limit


def to_export(trees: Sequence[tuple[Conversation, list[MessageRow]]]) -> Export:
    """The session's conversations, as the store read them, in the export format."""
    return Export(FORMAT, VERSION, now(), [_conversation(c, messages) for c, messages in trees])


def _conversation(conversation: Conversation, messages: list[MessageRow]) -> ExportConversation:
    exported = [
        ExportMessage(
            *(m.id, m.parent_id, m.role, m.content, m.created_at, m.updated_at),  # type: ignore[arg-type]
            *(m.status, m.finish_reason, m.interruption, m.generated_tokens, m.left_out, m.score),  # type: ignore[arg-type]
        )
        for m in messages
    ]
    return ExportConversation(
        *(conversation.id, conversation.title, conversation.model, conversation.created_at),
        *(conversation.updated_at, conversation.active_id or conversation.root_id, exported),
        dict(conversation.settings),
    )


def write_zip(export: Export) -> bytes:
    """The zip: the JSON, then one Markdown file per conversation (its active branch)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(EXPORT_NAME, encode_export(export))
        for conversation in export.conversations:
            archive.writestr(safe_name(conversation.title, conversation.id), markdown(conversation))
    return out.getvalue()


def read_import(body: bytes, limits: ImportLimits, model: str) -> list[tuple[str, ExportConversation]]:
    """Each conversation of an upload (the zip, its JSON, or ChatGPT's conversations.json) with the key of
    its source, all checked; :class:`ImportRefused` for anything wrong, before anything is written."""
    raw = _unzip(body, limits.bytes * _UNPACK_FACTOR) if body[:4] == b"PK\x03\x04" else body
    if looks_like_chatgpt(raw):
        return from_chatgpt(raw, model, limits)
    return [(conversation_key(c), c) for c in decode_export(raw, limits).conversations]


def _unzip(body: bytes, most: int) -> bytes:
    try:
        archive = zipfile.ZipFile(io.BytesIO(body))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ImportRefused(f"The file is not a readable zip: {exc}") from None
    if len(members) > _MAX_MEMBERS:
        raise ImportRefused(f"The zip holds {len(members)} files; an export holds at most {_MAX_MEMBERS}", 413)
    for member in members:
        name = member.filename
        if name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/") or ":" in name:
            raise ImportRefused(f"The zip holds a file named {name[:80]!r}, outside any export's layout: refused")
    names = {member.filename: member for member in members}
    chosen = names.get(EXPORT_NAME) or names.get(_CHATGPT_NAME)
    if chosen is None:
        raise ImportRefused(f"The zip holds neither {EXPORT_NAME} (an h2ochat export) nor {_CHATGPT_NAME} (ChatGPT's)")
    return _read_member(archive, chosen, most)


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, most: int) -> bytes:
    chunks, size = [], 0
    try:
        with archive.open(member) as stream:
            while chunk := stream.read(1 << 16):
                size += len(chunk)
                if size > most:
                    raise ImportRefused(
                        f"{member.filename} unpacks to more than {most} bytes, the most this server reads "
                        "(5 times max_import_bytes)",
                        413,
                    )
                chunks.append(chunk)
    except ImportRefused:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise ImportRefused(f"{member.filename} in the zip cannot be read: {exc}") from None
    return b"".join(chunks)
