"""A stored answer's stream that survives a broken connection: it reattaches and goes on.

An h2ochat server names each stored answer's run in the ``H2ochat-Generation-Id`` header and keeps
generating when the connection breaks. :class:`ResumableStream` stands in for the answer's
:class:`~h2ochat.providers.transport.ByteStream`: when the body breaks (or ends before the answer
did), it asks ``GET /conversation/<id>/stream?generationId=…&fromSeq=<events the reader decoded>``
again and again within its patience (the read limit), turns each replayed event back into the
answer's own wire form, and hands the reader an empty chunk first, which tells it to drop what it had
half-read (that event comes again, whole). So the reader never sees an event twice, nor misses one;
a log already compacted on the server (a gap in the numbers) is noted in ``gap``, and the answer's
final event, which carries its whole text, fills it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from h2ochat.protocol.errors import (
    H2oChatError,
    HTTPStatusError,
    IncompleteStream,
    ReadError,
    ServerError,
    TransportError,
)
from h2ochat.protocol.runs import END, UPDATE, Generation
from h2ochat.protocol.sse import EventStreamDecoder
from h2ochat.providers.transport import ByteStream

__all__ = ["Reopen", "ResumableStream"]

log = logging.getLogger("h2ochat")

Reopen = Callable[[int], Awaitable[ByteStream]]
"""Opens the reattach stream of the answer's run after a given event."""
_BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0)  # seconds between tries; the last one repeats


class ResumableStream:
    def __init__(self, first: ByteStream, reopen: Reopen, generation: Generation, patience: float) -> None:
        self.step, self.url = first.step, first.url
        self.events = 0  # whole events the reader decoded, as ByteStream counts them
        self.gap = False  # the server's log had dropped some events: the final event's text fills them
        self.reattached = 0
        self._stream = first
        self._reopen = reopen
        self._generation = generation
        self._patience = patience
        self._frames: EventStreamDecoder | None = None  # while reading a reattach stream
        self._next = 0  # the seq expected next from it
        self._ended = False  # its end frame came
        self._reading = False

    def __aiter__(self) -> ResumableStream:
        return self

    async def __anext__(self) -> bytes:
        while True:
            try:
                chunk = await self._stream.__anext__()
            except StopAsyncIteration:
                if self._ended:
                    raise
                broken: H2oChatError | None = None  # the body ended before the answer did
            except (ReadError, ServerError) as exc:
                broken = exc
            else:
                if self._frames is None:
                    return chunk
                if data := self._replayed(chunk):
                    return data
                if self._ended:
                    raise StopAsyncIteration
                continue
            await self._reattach(broken)
            return b""  # the reader drops what it had half-read

    def _replayed(self, chunk: bytes) -> bytes:
        """The answer's own wire form of the events in a chunk of the reattach stream, once each."""
        assert self._frames is not None
        out = []
        for frame in self._frames.decode(chunk):
            if frame.event == END:
                self._ended = True
            elif frame.event == UPDATE and frame.id.isdigit():
                seq = int(frame.id)
                if seq < self._next:
                    continue  # sent before the break: the reader has it
                self.gap = self.gap or seq > self._next
                self._next = seq + 1
                data = frame.data.encode()
                out.append(b"data:" + data + b"\n\n" if self._generation == "2023" else data + b"\n")
        return b"".join(out)

    async def _reattach(self, broken: H2oChatError | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._patience
        await self._stream.aclose()
        attempt = 0
        while True:
            pause = _BACKOFF[min(attempt, len(_BACKOFF) - 1)]
            attempt += 1
            try:
                stream = await self._reopen(self.events)
            except (TransportError, ServerError) as exc:  # not there yet (a restart, a network down)
                if loop.time() + pause >= deadline:
                    raise (broken or exc) from exc
                await asyncio.sleep(pause)
                continue
            except HTTPStatusError as exc:  # no such answer any more (deleted): nothing to go on with
                raise (broken or _incomplete(self)) from exc
            break
        log.info("reattached to the answer at %s after event %d", self.url, self.events)
        if self._reading:
            stream.got_token()
        self.reattached += 1
        self._stream, self._frames, self._next = stream, EventStreamDecoder(), self.events + 1

    def got_token(self) -> None:
        self._reading = True
        self._stream.got_token()

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> ResumableStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _incomplete(stream: ResumableStream) -> IncompleteStream:
    return IncompleteStream(f"{stream.step} step: the answer at {stream.url} can no longer be reattached to")
