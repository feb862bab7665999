"""Newline-delimited JSON: the framing half of an incremental decoder.

Current chat-ui answers a message with one JSON object per ``\\n``-terminated
line (``application/jsonl``).  This module cuts a byte stream into those lines,
whatever the read boundaries: a line may arrive one byte at a time, split in
the middle of a UTF-8 sequence, or hundreds to a 64 KiB read.  Since ``\\n``
never occurs inside a multi-byte UTF-8 sequence, lines are cut on bytes and
each is decoded whole, so a split character never needs mending.

What a line means is the business of the decoder above this one
(:class:`h2ochat.protocol.chatui.ChatUIStreamDecoder`), as the TGI decoder sits
above :mod:`h2ochat.protocol.sse`.  Pure code, no I/O.
"""

from __future__ import annotations

from h2ochat.protocol.errors import EventTooLarge

__all__ = ["DEFAULT_MAX_LINE_SIZE", "LineDecoder"]

# The same bound as an event of the event stream: a finalAnswer line holds the
# whole answer, as the TGI stream's last event does.
DEFAULT_MAX_LINE_SIZE = 1024 * 1024


class LineDecoder:
    """Chunks of bytes in, complete lines (without their ``\\n``) out.

    ``lines(chunk)`` returns the lines ``chunk`` completes, blank ones included;
    ``flush()`` ends the stream and returns the unterminated rest.  No line, and
    no unfinished rest, may pass ``max_line_size`` bytes, so a server that never
    sends a newline cannot make the client's memory grow without bound.
    """

    def __init__(self, max_line_size: int = DEFAULT_MAX_LINE_SIZE) -> None:
        if max_line_size < 1:
            raise ValueError("max_line_size must be a positive number of bytes")
        self.max_line_size = max_line_size
        # The unfinished line. A bytearray grows in place, so a long line read a byte at a time
        # costs linear time and a byte of memory per byte (a list of pieces costs ~34 per piece).
        # Public for a decoder's hot path (is anything held?), and never rebound, only changed in
        # place, so that a reference to it stays true. Callers read it; only this class writes it.
        self.held = bytearray()
        self.overflow = 0  # see lines()

    @property
    def has_pending_input(self) -> bool:
        """Whether an unterminated line is held (``flush`` returns it)."""
        return bool(self.held)

    def lines(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes, not yet checked against ``max_line_size``.

        When the unterminated rest after them passes the limit, it is dropped and
        ``overflow`` holds its size: the caller raises :meth:`too_large` once it
        has handed out what the complete lines held, so errors keep their place.
        """
        self.overflow = 0
        if 10 not in chunk:  # an int: `bytes in bytes` is several times slower
            self._hold(chunk)
            return []
        if self.held:
            self.held += chunk
            chunk = bytes(self.held)
            self.held.clear()
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            if len(rest) > self.max_line_size:
                self.overflow = len(rest)
            else:
                self.held += rest
        return lines

    def flush(self) -> bytes:
        """End of stream: the unterminated last line, or ``b""``."""
        rest = bytes(self.held)
        self.held.clear()
        return rest

    def too_large(self, size: int) -> EventTooLarge:
        """The error for a line of ``size`` bytes; the unfinished input is dropped."""
        self.held.clear()
        return EventTooLarge(
            f"a line of the answer stream grew past {self.max_line_size} bytes (at least {size} bytes before its "
            "newline); raise max_line_size if the server really sends updates this large"
        )

    def _hold(self, chunk: bytes) -> None:
        self.held += chunk
        if len(self.held) > self.max_line_size:
            # Nothing complete came in this read, so there is nothing to hand out first.
            raise self.too_large(len(self.held))
