"""The wire shapes of the h2oGPT chat protocol (docs/protocol.md sections 1, 3 and 4).

Requests are encoded and TGI events decoded here, once, for both the client
and the server.  msgspec does the JSON work: typed structs decode a token
event in well under a microsecond and ignore fields that newer TGI versions
add (``index``, ``top_tokens``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from h2ochat.protocol.errors import H2oChatError, MalformedEvent, error_for_event
from h2ochat.protocol.nesting import MAX_JSON_DEPTH, NESTING_CHECK_SIZE, too_deep
from h2ochat.protocol.sse import DEFAULT_MAX_EVENT_SIZE, EventStreamDecoder

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PARAMETERS",
    "DEFAULT_URL",
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

# The public h2oGPT chat of 2023 (no longer online) and its model.
DEFAULT_URL = "https://gpt-gm.h2o.ai"
DEFAULT_MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"

# What the original provider sent; the caller's keyword arguments override these. A session that
# uses the server's recommended parameters sends those instead, where the server lists them.
DEFAULT_PARAMETERS: dict[str, Any] = {
    "temperature": 0.4,
    "truncate": 2048,
    "max_new_tokens": 1024,
    "do_sample": True,
    "repetition_penalty": 1.2,
    "return_full_text": False,
}


class Token(msgspec.Struct, gc=False):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False


class Details(msgspec.Struct, gc=False):
    finish_reason: str
    generated_tokens: int
    seed: int | None = None


class StreamEvent(msgspec.Struct, gc=False):
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
    # chat-ui 2024: go on with the answer ``id`` (which ``response_id`` repeats). Unset is left out
    # of what the client sends, so a 2023 server never sees a field it does not know.
    is_continue: bool | msgspec.UnsetType = msgspec.UNSET
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


def message_request(
    inputs: str,
    parameters: Mapping[str, Any],
    defaults: Mapping[str, Any] = DEFAULT_PARAMETERS,
    *,
    web_search_id: str = "",
) -> bytes:
    """The JSON body of ``POST /conversation/<id>`` (step 3): ``parameters`` over ``defaults``;
    ``web_search_id`` names a search run before (the answer is grounded in its passages)."""
    request = MessageRequest(
        inputs=inputs,
        parameters={**defaults, **parameters},
        stream=True,
        options=MessageOptions(id=str(uuid.uuid4()), response_id=str(uuid.uuid4()), web_search_id=web_search_id),
    )
    return _encoder.encode(request)


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(StreamEvent)


class TGIStreamDecoder:
    """Bytes of a TGI event stream in, :class:`StreamEvent` objects out.

    Error events are turned into exceptions here so that every consumer treats
    them alike; ``partial_text`` is filled in by the caller, who knows it.
    Errors keep their place in the stream: an error event, a malformed or an
    oversized one is raised after every token that came before it, whatever
    the read boundaries.
    """

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        self._sse = EventStreamDecoder(max_event_size)

    def decode(self, chunk: bytes) -> Iterator[StreamEvent]:
        # The client's hot path.  The usual read holds exactly one token event
        # (a lone ``data:`` line): msgspec decodes it straight from the bytes,
        # and no ServerSentEvent, list or generator is made for it.  Anything
        # unusual takes the general path and gives exactly what it would alone.
        data = self._sse.lone_data(chunk)
        if data is None:
            return self._decode_blocks(chunk)
        # A short event cannot nest too deeply (nesting.py): the check costs one comparison here.
        try:
            event = None if len(data) > NESTING_CHECK_SIZE and too_deep(data) else _event_decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            event = None  # invalid JSON or UTF-8, or nested too deeply: parse_event says which
        if event is None or event.error is not None:
            try:
                event = parse_event(data.decode("utf-8", "replace"))
            except H2oChatError as exc:
                return _raising([], exc)
        return iter((event,))

    def _decode_blocks(self, chunk: bytes) -> Iterator[StreamEvent]:
        """Any read: every event it completes, in one pass, with the same shortcut per event."""
        sse = self._sse
        try:
            blocks = sse.blocks(chunk)
        except H2oChatError as exc:
            return _raising([], exc)
        events: list[StreamEvent] = []
        append = events.append
        limit = sse.max_event_size
        nesting_check = NESTING_CHECK_SIZE
        for block in blocks:
            size = len(block)
            if size > limit:
                return _raising(events, sse.too_large(size))
            if block[:5] == b"data:" and 10 not in block:
                # The block's "data:" holds no bracket or quote: too_deep reads it like the data alone.
                try:
                    if size > nesting_check and too_deep(block):
                        event = None
                    else:
                        event = _event_decoder.decode(block[6:] if block[5:6] == b" " else block[5:])
                except (msgspec.DecodeError, UnicodeDecodeError):
                    event = None
                if event is not None and event.error is None:
                    append(event)
                    continue
            elif not block:
                continue
            text = _event_data(sse, block)
            if text is None:
                continue
            try:
                append(parse_event(text))
            except H2oChatError as exc:
                return _raising(events, exc)
        if sse.overflow:  # the unfinished event after these grew past the limit
            return _raising(events, sse.too_large(sse.overflow))
        return iter(events)


def _event_data(sse: EventStreamDecoder, block: bytes) -> str | None:
    if block[:5] == b"data:" and 10 not in block:
        return (block[6:] if block[5:6] == b" " else block[5:]).decode("utf-8", "replace")
    event = sse.parse_block(block)
    return None if event is None else event.data


def _raising(events: list[StreamEvent], error: H2oChatError) -> Iterator[StreamEvent]:
    """The events, then the error: errors keep their place in the stream."""
    yield from events
    raise error


def parse_event(data: str) -> StreamEvent:
    """Decode one event's data; an error event becomes its typed exception."""
    if too_deep(data):
        raise MalformedEvent(f"the server sent an event nested more than {MAX_JSON_DEPTH} levels deep: {data[:120]!r}")
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
