"""Runs on the wire: the events of an answer's own stream, numbered, and the reattach stream.

An answer's stream is cut into **events**, numbered from 1 (``seq``) in the order it sent them: for
chat-ui 2023 (``text/event-stream`` of TGI events) each ``data:`` event; for today's chat-ui
(``application/jsonl``) each ``MessageUpdate`` line, keep-alives excepted, the NUL padding and the 4096
spaces after ``finalAnswer`` dropped. A client that counted the events it received asks for the rest
with ``GET /conversation/<id>/stream?generationId=<id>&fromSeq=<count>``; the answer
(docs/protocol.md, "Reattach") is an event stream of ``id: <seq>`` / ``event: update`` /
``data: <the event>`` frames, then ``event: end`` with ``{"status": ...}``.

The server (cutting its own stream) and the client (counting what it got) share this module, so both
count the same events.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from h2ochat.protocol.sse import encode_event

__all__ = [
    "END",
    "END_STATUSES",
    "GENERATION_HEADER",
    "UPDATE",
    "EndStatus",
    "Generation",
    "RunEnd",
    "decode_end",
    "encode_end",
    "encode_run_event",
    "split_events",
]

Generation = Literal["2023", "current"]
EndStatus = Literal["completed", "interrupted", "error", "gone"]
END_STATUSES: tuple[str, ...] = ("completed", "interrupted", "error", "gone")
GENERATION_HEADER = "H2ochat-Generation-Id"  # names the run of an answer's response (and of a reattach)
UPDATE = "update"  # the event type of a replayed or live event
END = "end"  # the event type of the last frame


class RunEnd(msgspec.Struct, frozen=True):
    status: EndStatus


class _Stream(msgspec.Struct, tag_field="type", tag="stream"):
    token: str


_end_decoder = msgspec.json.Decoder(RunEnd)
_STREAM = b'{"type":"stream"'


def split_events(generation: Generation, chunk: bytes) -> list[str]:
    """The events in ``chunk``, a piece of an answer's own stream that ends at an event's end."""
    if generation == "2023":
        return [_sse_data(block) for block in chunk.split(b"\n\n") if block.strip()]
    events = []
    for line in chunk.split(b"\n"):
        line = line.strip(b" ")  # the spaces after finalAnswer prefix the next line
        if line.startswith(_STREAM):  # unpadded, as chat-ui stores tokens
            token = msgspec.json.decode(line, type=_Stream).token.replace("\0", "")
            line = msgspec.json.encode(_Stream(token))
        if line:
            events.append(line.decode())
    return events


def _sse_data(block: bytes) -> str:
    lines = block.split(b"\n")
    return "\n".join(line[5:].removeprefix(b" ").decode() for line in lines if line.startswith(b"data:"))


def encode_run_event(seq: int, data: str) -> bytes:
    return encode_event(data, UPDATE, str(seq))


def encode_end(status: EndStatus) -> bytes:
    return encode_event(msgspec.json.encode(RunEnd(status)), END)


def decode_end(data: str) -> EndStatus:
    """The status of an ``end`` frame; ValueError if it is not one."""
    try:
        return _end_decoder.decode(data).status
    except msgspec.ValidationError as exc:
        raise ValueError(f"malformed end of a reattach stream: {exc}") from None
