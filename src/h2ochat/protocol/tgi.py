"""The wire shapes of the h2oGPT chat protocol (PROTOCOL.md sections 1, 3 and 4).

Requests are encoded and TGI events decoded here, once, for both the client
and the server.  msgspec does the JSON work: typed structs decode a token
event in well under a microsecond and ignore fields that newer TGI versions
add (``index``, ``top_tokens``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import msgspec

from h2ochat.protocol.errors import MalformedEvent, error_for_event
from h2ochat.protocol.sse import DEFAULT_MAX_EVENT_SIZE, EventStreamDecoder

__all__ = [
    "DEFAULT_PARAMETERS",
    "FINISH_REASONS",
    "Details",
    "MessageOptions",
    "MessageRequest",
    "StreamEvent",
    "TGIStreamDecoder",
    "Token",
    "encode_error_event",
    "encode_stream_event",
    "message_request",
    "settings_form",
]

# What the original provider sent; the caller's keyword arguments override these.
DEFAULT_PARAMETERS: dict[str, Any] = {
    "temperature": 0.4,
    "truncate": 2048,
    "max_new_tokens": 1024,
    "do_sample": True,
    "repetition_penalty": 1.2,
    "return_full_text": False,
}

FINISH_REASONS = ("length", "eos_token", "stop_sequence")


class Token(msgspec.Struct):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class Details(msgspec.Struct):
    finish_reason: str
    generated_tokens: int
    seed: int | None = None


class StreamEvent(msgspec.Struct):
    """One TGI event: a token, or the last token with the whole text, or an error."""

    token: Token | None = None
    generated_text: str | None = None
    details: Details | None = None
    error: str | None = None
    error_type: str | None = None


class _TokenEvent(msgspec.Struct):
    """The token event as TGI writes it: exactly these three fields, in this order."""

    token: Token
    generated_text: str | None
    details: Details | None


class MessageOptions(msgspec.Struct):
    id: str
    response_id: str
    is_retry: bool = False
    use_cache: bool = False
    web_search_id: str = ""


class MessageRequest(msgspec.Struct):
    """The body of ``POST /conversation/<id>``."""

    inputs: str
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    stream: bool = True
    options: MessageOptions | None = None


def settings_form(model: str) -> dict[str, str]:
    """The form fields of ``POST /settings`` (step 1)."""
    return {
        "ethicsModalAccepted": "true",
        "shareConversationsWithModelAuthors": "true",
        "ethicsModalAcceptedAt": "",
        "activeModel": model,
        "searchEnabled": "true",
    }


def message_request(inputs: str, parameters: dict[str, Any]) -> bytes:
    """The JSON body of ``POST /conversation/<id>`` (step 3), defaults merged in."""
    request = MessageRequest(
        inputs=inputs,
        parameters={**DEFAULT_PARAMETERS, **parameters},
        stream=True,
        options=MessageOptions(id=str(uuid.uuid4()), response_id=str(uuid.uuid4())),
    )
    return _encoder.encode(request)


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(StreamEvent)


class TGIStreamDecoder:
    """Bytes of a TGI event stream in, :class:`StreamEvent` objects out.

    Error events are turned into exceptions here so that every consumer treats
    them alike; ``partial_text`` is filled in by the caller, who knows it.
    Events are parsed lazily, so an error is raised only after every token
    that came before it in the same read has been handed out.
    """

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self._sse = EventStreamDecoder(max_event_size)

    def decode(self, chunk: bytes) -> Iterator[StreamEvent]:
        for event in self._sse.decode(chunk):
            yield parse_event(event.data)


def parse_event(data: str) -> StreamEvent:
    """Decode one event's data; an error event becomes its typed exception."""
    try:
        event = _event_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MalformedEvent(f"the server sent an event that is not a TGI event ({exc}): {data[:120]!r}") from None
    if event.error is not None:
        raise error_for_event(event.error, event.error_type)
    return event


def encode_stream_event(
    token: Token,
    generated_text: str | None = None,
    details: Details | None = None,
) -> bytes:
    """One TGI token event, byte-exact: ``data:{json}\\n\\n``."""
    return b"data:" + _encoder.encode(_TokenEvent(token, generated_text, details)) + b"\n\n"


def encode_error_event(error: str, error_type: str) -> bytes:
    """An in-stream error event with one of the TGI ``error_type`` values."""
    return b"data:" + _encoder.encode({"error": error, "error_type": error_type}) + b"\n\n"
