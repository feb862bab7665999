"""Current chat-ui's request and reply bodies around the answer stream, encoded and decoded once.

- ``POST /conversation``: the JSON request (``model``, ``preprompt``) and its
  answer, ``conversationId`` plus ``conversation``, a superjson *string* of
  the new conversation whose ``rootMessageId`` is the system message that every
  conversation now starts with (the parent of the first turn).
- ``POST /conversation/<id>``: the JSON of the multipart ``data`` part.

The answer stream itself is in :mod:`h2ochat.protocol.chatui`, the superjson
envelope in :mod:`h2ochat.protocol.superjson`.  Pure code, no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from h2ochat.protocol import superjson
from h2ochat.protocol.errors import ProtocolError
from h2ochat.protocol.nesting import MAX_JSON_DEPTH, too_deep

__all__ = [
    "CreateRequest",
    "CreatedConversation",
    "MessagePost",
    "decode_create_answer",
    "decode_message_post",
    "encode_create_answer",
    "message_post",
    "GENERATIONS",
    "Generation",
    "announce_generations",
    "announced_generations",
]


class CreateRequest(msgspec.Struct, omit_defaults=True):
    """The JSON body of ``POST /conversation``."""

    model: str
    preprompt: str | None = None  # the system prompt; the model's own when left out
    from_share: str | None = msgspec.field(default=None, name="fromShare")


class MessagePost(msgspec.Struct, omit_defaults=True):
    """The JSON of the ``data`` part of ``POST /conversation/<id>``.

    ``id`` is the *parent* of a new turn (the system root, or the last answer);
    with ``is_retry`` it is the message to edit (a user message, with new
    ``inputs``) or to answer again (an assistant message).
    """

    inputs: str | None = None
    id: str | None = None
    is_retry: bool = False
    generation_id: str | None = msgspec.field(default=None, name="generationId")
    timezone: str | None = None
    selected_mcp_server_names: list[str] | None = msgspec.field(default=None, name="selectedMcpServerNames")
    selected_mcp_servers: list[dict[str, Any]] | None = msgspec.field(default=None, name="selectedMcpServers")
    resume_elicitation_id: str | None = msgspec.field(default=None, name="resumeElicitationId")
    # Still sent by the page and older clients; today's server drops them, older ones read them.
    is_continue: bool | None = None
    web_search: bool | None = None


class _CreateAnswer(msgspec.Struct):
    conversation_id: str = msgspec.field(name="conversationId")
    conversation: str | None = None  # servers before the conversation tree send only the id


class CreatedConversation(msgspec.Struct, frozen=True):
    """What a create answer says: the id, and the root message to post the first turn under."""

    id: str
    root_message_id: str | None  # None from a server that does not send the conversation
    conversation: dict[str, Any] | None  # the decoded conversation, dates as datetime


_encoder = msgspec.json.Encoder()
_post_decoder = msgspec.json.Decoder(MessagePost)
_create_decoder = msgspec.json.Decoder(_CreateAnswer)


def message_post(
    inputs: str, parent: str, *, generation_id: str | None = None, is_retry: bool = False, web_search: bool = False
) -> bytes:
    """The ``data`` part of a message post: ``inputs`` under ``parent``, with a fresh generation id
    (``web_search``: the server searches the web first)."""
    post = MessagePost(
        inputs=inputs,
        id=parent,
        is_retry=is_retry,
        generation_id=generation_id or str(uuid.uuid4()),
        web_search=web_search or None,
    )
    return _encoder.encode(post)


def decode_message_post(data: bytes | str) -> MessagePost:
    """The server's reading of a ``data`` part; ``ValueError`` says what is wrong with it.

    ``inputs`` gets chat-ui's treatment (CRLF becomes LF); ``id`` and
    ``generationId`` must be UUIDs, as chat-ui's own check wants.
    """
    if too_deep(data):
        raise ValueError(f"the data part nests JSON more than {MAX_JSON_DEPTH} levels deep")
    try:
        post = _post_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(
            f"the data part is not the JSON of a message ({exc}); send "
            '{"inputs": "text", "id": "<parent message id>"}'
        ) from None
    if post.inputs is not None:
        if not post.inputs:
            raise ValueError("inputs is empty: send the text of the message, or leave inputs out to regenerate")
        post.inputs = post.inputs.replace("\r\n", "\n")
    for name, value in (("id", post.id), ("generationId", post.generation_id)):
        if value is not None and not _is_uuid(value):
            raise ValueError(f"{name} must be a UUID such as a message id from the conversation, not {value[:60]!r}")
    return post


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36  # the dashed form only, as chat-ui's zod check accepts


def decode_create_answer(body: bytes | str) -> CreatedConversation:
    """Read a create answer; :class:`ProtocolError` when it is not one."""
    if too_deep(body):
        raise ProtocolError(f"the create answer nests JSON more than {MAX_JSON_DEPTH} levels deep")
    try:
        answer = _create_decoder.decode(body)
    except msgspec.DecodeError as exc:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        raise ProtocolError(
            f"the create answer is not {{'conversationId': …}} ({exc}): {text[:120]!r}; "
            "is this a chat-ui server of today? (protocol='2023' speaks the older one)"
        ) from None
    if answer.conversation is None:
        return CreatedConversation(answer.conversation_id, None, None)
    conversation = superjson.decode(answer.conversation)
    if not isinstance(conversation, dict):
        raise ProtocolError(f"the create answer's conversation is not an object: {answer.conversation[:120]!r}")
    root = conversation.get("rootMessageId")
    return CreatedConversation(answer.conversation_id, root if isinstance(root, str) else None, conversation)


def encode_create_answer(conversation_id: str, conversation: Mapping[str, Any]) -> bytes:
    """The create answer as chat-ui writes it: the conversation (datetimes and all) as a superjson string."""
    inner = _encoder.encode(superjson.encode(conversation)).decode()
    return _encoder.encode({"conversationId": conversation_id, "conversation": inner})


Generation = Literal["2023", "current"]
#: The generations of chat-ui's protocol, by the names ``protocol=`` takes and h2ochat's server announces.
GENERATIONS: tuple[Generation, ...] = ("2023", "current")
_MARK = "h2ochat"


def announce_generations(envelope: dict[str, Any]) -> dict[str, Any]:
    """``envelope`` (superjson's) with the generations this server speaks beside it: superjson reads
    only ``json`` and ``meta``, so other clients see nothing new."""
    return {**envelope, _MARK: {"protocols": list(GENERATIONS)}}


def announced_generations(envelope: Any) -> tuple[str, ...]:
    """The generations a server announced beside an envelope (none from a chat-ui)."""
    mark = envelope.get(_MARK) if isinstance(envelope, Mapping) else None
    protocols = mark.get("protocols") if isinstance(mark, Mapping) else None
    return tuple(p for p in protocols if isinstance(p, str)) if isinstance(protocols, list) else ()
