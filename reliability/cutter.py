"""A flaky network on loopback: a TCP relay that cuts an answer's connection part-way.

:class:`CuttingProxy` forwards every connection to the server unchanged, except that a response
naming an answer's run (the ``H2ochat-Generation-Id`` header: an answer being streamed, or a reattach
stream) may be cut ``cut()`` bytes into its body, as a phone losing its network does: both
sockets are closed at once, mid-event when the number falls there. ``cuts`` bounds how many
connections it cuts in all, so that every answer ends; :meth:`drop` resets those carrying a run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

__all__ = ["CuttingProxy"]

_MARK = b"\r\nH2ochat-Generation-Id:"


class CuttingProxy:
    def __init__(self, upstream: int, cut: Callable[[], int | None], cuts: int = 1, mark: bytes = _MARK) -> None:
        self.upstream = upstream
        self.mark = mark  # the header line that marks a response to cut
        self.cut = cut  # bytes after the header to cut at; None: not this one
        self.cuts = cuts  # left to make
        self.made = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._marked: set[tuple[asyncio.StreamWriter, ...]] = set()  # connections carrying a run now

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def drop(self) -> int:
        """Reset every connection carrying a run now, as a network going away does; how many."""
        dropped = list(self._marked)
        for writers in dropped:
            for writer in writers:
                writer.transport.abort()
        self._marked.clear()
        self.made += len(dropped)
        return len(dropped)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> CuttingProxy:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_writer.close()
            self._tasks.discard(task)
            return
        writers = (client_writer, server_writer)
        try:
            await asyncio.gather(
                self._pipe(client_reader, server_writer, writers, watch=False),
                self._pipe(server_reader, client_writer, writers, watch=True),
            )
        finally:
            self._marked.discard(writers)
            for writer in writers:
                writer.close()
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        writers: tuple[asyncio.StreamWriter, ...],
        *,
        watch: bool,
    ) -> None:
        seen = b""  # the tail of what passed, to find the header across reads
        left: int | None = None  # bytes to pass before the cut, once a run's header passed
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(4096):
                if watch and left is None and self.cuts > 0:
                    passed = seen + data
                    found = passed.find(self.mark)
                    if found >= 0:
                        self._marked.add(writers)
                    if found >= 0 and (chosen := self.cut()) is not None:
                        head_end = passed.find(b"\r\n\r\n", found)  # a head split across reads: this read's end
                        body = len(passed) if head_end < 0 else head_end + 4
                        left = body - len(seen) + chosen  # counted from the body's start
                        self.cuts -= 1
                    seen = (seen + data)[-len(self.mark) :]
                if left is not None and len(data) >= left:
                    writer.write(data[:left])
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.drain()
                    self.made += 1
                    for each in writers:
                        each.transport.abort()  # a reset, as a network gone
                    return
                if left is not None:
                    left -= len(data)
                writer.write(data)
                await writer.drain()
        for each in writers:
            each.close()
