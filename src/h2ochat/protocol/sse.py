"""Server-Sent Events: an incremental decoder and the matching encoder.

The decoder follows the WHATWG event-stream rules (docs/protocol.md section 5) and
works on bytes, so that it can be fed whatever a socket read returns: one byte,
half a CRLF, the middle of a UTF-8 sequence, or 64 KiB holding hundreds of
events.  It does no I/O; the client feeds it from the network and the tests
and the benchmark feed it from memory.

The common case on a TGI stream is an event made of a single ``data:`` line.
Such events are recognised without walking the general line parser, which is
what keeps decoding near a microsecond per event.
"""

from __future__ import annotations

from dataclasses import dataclass

from h2ochat.protocol.errors import EventTooLarge

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "EventStreamDecoder",
    "ServerSentEvent",
    "encode_comment",
    "encode_event",
]

DEFAULT_MAX_EVENT_SIZE = 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class ServerSentEvent:
    """One dispatched event: its data, type, last event id and retry hint."""

    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


class EventStreamDecoder:
    """Turns chunks of an event stream into :class:`ServerSentEvent` objects.

    ``decode(chunk)`` returns the events completed by ``chunk``; ``flush()`` ends
    the stream and drops an unfinished event, as the standard says.  Buffered
    input for one event may not exceed ``max_event_size`` bytes, so a server
    that never sends a blank line cannot make the client grow without bound.
    """

    def __init__(self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE) -> None:
        if max_event_size < 1:
            raise ValueError("max_event_size must be a positive number of bytes")
        self.max_event_size = max_event_size
        self._pieces: list[bytes] = []  # input of the unfinished event
        self._pending = 0  # bytes held in _pieces
        self._ends_with_lf = False  # whether _pieces ends with b"\n"
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF belongs to it
        self._bom_checked = False
        self._last_id = ""
        self._retry: int | None = None
        self._deferred: EventTooLarge | None = None  # raised by the next call, after the events before it
        self.overflow = 0  # see blocks()

    @property
    def has_pending_input(self) -> bool:
        """Whether an unfinished event is buffered (it is dropped by ``flush``)."""
        return self._pending > 0 and any(piece.strip(b"\n") for piece in self._pieces)

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events ``chunk`` completes.

        Errors keep stream order: when an event passes the size limit, the events
        before it are returned first and the error is raised by the next call.
        """
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        events: list[ServerSentEvent] = []
        blocks = self.blocks(chunk)
        append = events.append
        last_id = self._last_id
        for block in blocks:
            if len(block) > self.max_event_size:
                return self._fail(events, self.too_large(len(block)))
            if block[:5] == b"data:" and 10 not in block:
                value = block[6:] if block[5:6] == b" " else block[5:]
                append(ServerSentEvent(value.decode("utf-8", "replace"), "message", last_id, self._retry))
            elif block:
                event = self.parse_block(block)
                last_id = self._last_id
                if event is not None:
                    append(event)
        if self.overflow:
            return self._fail(events, self.too_large(self.overflow))
        return events

    def _fail(self, events: list[ServerSentEvent], error: EventTooLarge) -> list[ServerSentEvent]:
        if not events:
            raise error
        self._deferred = error
        return events

    def lone_data(self, chunk: bytes) -> bytes | None:
        """The data of ``chunk`` if it is exactly one event of one ``data:`` line, else None.

        That is the usual read of a token stream.  The chunk is consumed only
        when the data is returned, with the same effect as :meth:`decode`;
        on None, nothing happened and the chunk goes to :meth:`blocks`.
        """
        if (
            self._pieces
            or self._skip_lf
            or not self._bom_checked
            or chunk[:5] != b"data:"
            or chunk.find(10) != len(chunk) - 2  # the first LF is the last but one byte...
            or chunk[-1] != 10  # ...and the last is LF: one line, then the blank line
            or 13 in chunk
            or len(chunk) - 2 > self.max_event_size
        ):
            return None
        return chunk[6:-2] if chunk[5] == 32 else chunk[5:-2]

    def blocks(self, chunk: bytes) -> list[bytes]:
        """The framing half of :meth:`decode`: the raw blocks (events, LF line ends) that
        ``chunk`` completes, empty ones included, not yet checked against ``max_event_size``.

        For decoders built on this one (the TGI decoder) that want the bytes
        of each event rather than :class:`ServerSentEvent` objects.  When the
        unfinished event left over passes the size limit, it is dropped and
        ``overflow`` holds its size: the caller raises :meth:`too_large` once it
        has handed out the complete events before it.
        """
        self.overflow = 0
        if not self._bom_checked:
            chunk = self._strip_bom(chunk)
        elif not self._pieces and not self._skip_lf and chunk[-2:] == b"\n\n" and 13 not in chunk:
            # The usual read: whole events, nothing held back, LF line ends.
            blocks = chunk.split(b"\n\n")
            if not blocks[-1]:  # else an odd run of LFs ends the chunk: the general path
                del blocks[-1]
                return blocks
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 10:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if 13 in chunk:  # CR; an int, because `bytes in bytes` is several times slower
            # CR and CRLF end lines exactly like LF; a CR at the very end may be
            # the first half of a CRLF, whose LF must then not count twice.
            self._skip_lf = chunk[-1] == 13
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n" not in chunk and not (self._ends_with_lf and chunk[0] == 10):
            self._hold(chunk)
            return []
        if self._pieces:
            self._pieces.append(chunk)
            chunk = b"".join(self._pieces)
        blocks = chunk.split(b"\n\n")
        rest = blocks.pop()
        self._pieces = [rest] if rest else []
        self._pending = 0
        self._ends_with_lf = False
        if rest:
            self._pending = len(rest)
            self._ends_with_lf = rest[-1] == 10
            if self._pending > self.max_event_size:
                self.overflow = self._pending
                self._reset()
        return blocks

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: an event without its closing blank line is dropped.

        An error left by the last :meth:`decode` (an oversized event after
        others) is raised here if no later decode raised it.
        """
        self._reset()
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        return []

    def _reset(self) -> None:
        self._pieces = []
        self._pending = 0
        self._ends_with_lf = False
        self._skip_lf = False

    def _hold(self, chunk: bytes) -> None:
        self._pieces.append(chunk)
        self._pending += len(chunk)
        self._ends_with_lf = chunk[-1] == 10
        if self._pending > self.max_event_size:
            raise self.too_large(self._pending)  # no complete event in this read: nothing to hand out first

    def too_large(self, size: int) -> EventTooLarge:
        """The error for an event of ``size`` bytes; the unfinished input is dropped."""
        self._reset()
        return EventTooLarge(
            f"an event grew past {self.max_event_size} bytes (at least {size} bytes before its blank line); "
            "raise max_event_size if the server really sends events this large"
        )

    def _strip_bom(self, chunk: bytes) -> bytes:
        # The BOM may itself arrive split across reads: hold back a proper prefix of it.
        held = b"".join(self._pieces) + chunk
        if len(held) < len(_BOM) and _BOM.startswith(held):
            self._pieces = [held] if held else []
            self._pending = len(held)
            return b""
        self._bom_checked = True
        self._pieces = []
        self._pending = 0
        return held[3:] if held.startswith(_BOM) else held

    def parse_block(self, block: bytes) -> ServerSentEvent | None:
        """The general WHATWG line parser, for anything but a lone data line."""
        data: list[str] = []
        event_type = ""
        for raw in block.split(b"\n"):
            if not raw:
                # An empty line inside a block can only be its first line (a run of
                # blank lines); it dispatches nothing since no field came before it.
                continue
            if raw[0] == 58:  # ":" starts a comment
                continue
            line = raw.decode("utf-8", "replace")
            name, colon, value = line.partition(":")
            if colon and value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id" and "\0" not in value:
                self._last_id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                self._retry = int(value)
        if not data:
            return None
        return ServerSentEvent("\n".join(data), event_type or "message", self._last_id, self._retry)


def encode_event(data: str | bytes, event: str | None = None, id: str | None = None) -> bytes:
    """One event as it goes on the wire: ``data:`` without a space, LF, blank line.

    Multi-line data becomes one ``data:`` line per line, so that any decoder
    reassembles it exactly.
    """
    raw = data.encode() if isinstance(data, str) else data
    head = b""
    if event is not None:
        head += b"event:" + _single_line(event, "event") + b"\n"
    if id is not None:
        head += b"id:" + _single_line(id, "id") + b"\n"
    if 10 not in raw and 13 not in raw:
        return head + b"data:" + raw + b"\n\n"
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return head + b"".join(b"data:" + line + b"\n" for line in lines) + b"\n"


def encode_comment(text: str = "") -> bytes:
    """A comment line, which decoders ignore; an empty one is the keep-alive."""
    return b":" + _single_line(text, "comment") + b"\n\n"


def _single_line(value: str, what: str) -> bytes:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an event {what} cannot contain a line break: {value!r}")
    return value.encode()
