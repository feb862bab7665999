"""The connection guard: slow and idle clients cannot hold the server's sockets.

aiohttp closes idle keep-alive connections (``keepalive_timeout``) but has no
limit on how long a client may take to send a request head or a body, and no
cap on open connections. The guard adds them in the server's own connection
handling: :class:`ConnectionGuard` accepts the connections itself, one at a
time and only while it has descriptors to spare (asyncio's own accept loop
takes up to the backlog at once and fails with EMFILE under a low ``ulimit
-n``); each connection is a small :class:`GuardedConnection` that hands every
callback to aiohttp's own protocol and keeps the clocks.

- **Request head**: a connection that has not sent a complete head within
  ``header_timeout`` of its start (or of the first byte of a later request on
  a keep-alive connection) is closed.
- **Request body**: a body not complete within ``body_timeout`` of its
  request reaching the application fails the handler's read with a 408,
  which is answered and the connection closed.
- **Open connections**: at ``max_connections``, a new connection evicts the
  connection that has waited longest without a request in progress (a
  connection whose head has arrived is in one); when every connection is in
  a request, the new one is closed at once.

Every close here is an abort (:func:`~h2ochat.server.edge.sockets.drop`, a
reset when an answer is left unsent): ``transport.close()`` waits until the
unsent answer is delivered, which a client that stopped reading never lets
happen, so its socket would stay open, and counted against the cap, for good.
The counts in the log are of connections actually closed (``connection_lost``).

The :func:`guard_requests` middleware tells a connection when a request
reaches the application and when it leaves, so a request being answered (a
long stream, its keep-alives) is never cut by any of these limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from h2ochat.server.config import ServerConfig
from h2ochat.server.edge.sockets import BACKLOG, SLACK, bind, drop, fit_open_files

__all__ = ["ConnectionGuard", "GuardedConnection", "Limits", "fit_open_files", "guard_requests", "listen"]

log = logging.getLogger("h2ochat.server.edge.guard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_WARN_EVERY = 60.0  # seconds between two "server full" warnings
# The kernel's send buffer for each accepted socket (None: its own, which grows to
# megabytes on loopback). A test-scoped hook: tests and the reliability suites shrink
# it so that a client that stops reading fills it, as it would over a real network.
SEND_BUFFER: int | None = None


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    body_timeout: float
    max_connections: int


class GuardedConnection(asyncio.Protocol):
    """One client connection: aiohttp's protocol inside, the guard's clocks outside."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.in_request = False
        self.head_seen = False  # the blank line that ends a request head has arrived
        self.body_timed_out = False
        self.closed_by: str | None = None  # the limit that closed it, counted once it is really closed
        self._admitted = False
        self._tail = b""  # the last bytes of a head so far (none: no head byte yet), to find its end across reads
        self._head_clock: asyncio.TimerHandle | None = None
        self._body_clock: asyncio.TimerHandle | None = None

    # asyncio's callbacks, each handed on to aiohttp's protocol -------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.guard.admit(self):
            self.close("refused")
            return
        self._admitted = True
        self._start_head_clock()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        if not self.in_request and not self.head_seen:
            self._watch_head(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_clocks()
        self.guard.forget(self)
        self.guard.closed_socket()
        if self.closed_by is not None:
            self.guard.count(self.closed_by)
        self.transport = None
        if self._admitted:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def _watch_head(self, data: bytes) -> None:
        # The head's end, seen in the bytes: the connection stops being evictable at once,
        # not some turns of the event loop later when its handler starts.
        if self._head_clock is None:
            self._start_head_clock()  # the first byte of a later request on a keep-alive connection
        # Blank lines before a head are skipped (aiohttp does the same): "\r\n\r\n" alone is no head.
        seen = self._tail + data if self._tail else data.lstrip(b"\r\n")
        if b"\r\n\r\n" in seen:
            self.head_seen, self._tail = True, b""
            self._stop_clocks()
            self.guard.busy(self)
        else:
            self._tail = seen[-3:]

    # What the middleware says --------------------------------------------------------------------

    def request_started(self, request: web.BaseRequest) -> None:
        self.in_request = True
        self.guard.busy(self)
        self._stop_clocks()
        if not request.content.is_eof():
            loop = asyncio.get_running_loop()
            self._body_clock = loop.call_later(self.guard.limits.body_timeout, self._body_stalled, request)
            request.content.on_eof(self._stop_body_clock)

    def request_ended(self) -> None:
        self.in_request = self.head_seen = False
        self._tail = b""
        self._stop_clocks()
        if self.transport is not None:
            self.guard.idle(self)

    # Clocks ----------------------------------------------------------------------------------------

    def _start_head_clock(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_clock = loop.call_later(self.guard.limits.header_timeout, self._no_head)

    def _no_head(self) -> None:
        self._head_clock = None
        self.close("header_timeout")

    def _body_stalled(self, request: web.BaseRequest) -> None:
        # The handler's read fails with a 408 in its API's shape; guard_requests
        # sends that answer and closes the connection (the rest never comes).
        self._body_clock = None
        self.body_timed_out = True
        self.guard.count("body_timeout")
        seconds = self.guard.limits.body_timeout
        reason = f"Request Timeout: the request body did not arrive within {seconds:g} s"
        request.content.set_exception(web.HTTPRequestTimeout(reason=reason))

    def _stop_body_clock(self) -> None:
        if self._body_clock is not None:
            self._body_clock.cancel()
            self._body_clock = None

    def _stop_clocks(self) -> None:
        if self._head_clock is not None:
            self._head_clock.cancel()
            self._head_clock = None
        self._stop_body_clock()

    def close(self, why: str) -> None:
        # Even when already closing: aiohttp's own close (keepalive_timeout) may be waiting on a
        # client that reads nothing.
        if self.transport is not None and self.closed_by is None:
            self.closed_by = why
            log.debug("closing %s: %s", self.transport.get_extra_info("peername"), why)
            drop(self.transport)


class ConnectionGuard:
    """The protocol factory: wraps each of aiohttp's connections and keeps the cap.

    ``waiting`` holds the open connections without a request in progress, the
    longest-waiting first: the ones a new connection may evict.
    """

    def __init__(self, factory: Callable[[], asyncio.Protocol], limits: Limits) -> None:
        self.factory = factory
        self.limits = limits
        self.open: set[GuardedConnection] = set()  # admitted, not yet closed
        self.listeners: list[socket.socket] = []
        self.waiting: dict[GuardedConnection, None] = {}
        self.sockets = 0  # every accepted socket not yet closed, evicted ones included
        self._room = asyncio.Event()
        self._room.set()
        self._setting_up: set[asyncio.Task[None]] = set()  # strong references until each is done
        self.counts: Counter[str] = Counter()  # connections accepted, and closed by each limit
        self._warned_at = -_WARN_EVERY

    def __call__(self) -> GuardedConnection:
        return GuardedConnection(self, self.factory())

    async def accept(self, listener: socket.socket) -> None:
        """Accept connections on ``listener`` while fewer than the cap and its slack are open; until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await self._room.wait()
            try:
                client, _ = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE (descriptors taken elsewhere in the process), ECONNABORTED
                log.warning("accepting a connection failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            self._connect(loop, client)
            # Then those already waiting, as far as there is room: one turn of the loop for many.
            for _ in range(BACKLOG):
                if not self._room.is_set():
                    break
                try:
                    client, _ = listener.accept()
                except OSError:  # none left (BlockingIOError), or a failure the next sock_accept reports
                    break
                self._connect(loop, client)

    def _connect(self, loop: asyncio.AbstractEventLoop, client: socket.socket) -> None:
        """Hand an accepted socket to a :class:`GuardedConnection`, in a task of its own."""
        client.setblocking(False)
        if SEND_BUFFER is not None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._opened_socket()
        task = loop.create_task(self._set_up(loop, client))
        self._setting_up.add(task)
        task.add_done_callback(self._setting_up.discard)

    async def _set_up(self, loop: asyncio.AbstractEventLoop, client: socket.socket) -> None:
        try:
            await loop.connect_accepted_socket(self, client)
        except Exception:  # pragma: no cover - the client left at once, or worse: the others go on
            log.exception("setting up an accepted connection failed")
            client.close()
            self.closed_socket()

    def _opened_socket(self) -> None:
        self.sockets += 1
        if self.sockets >= self.limits.max_connections + SLACK:
            self._room.clear()

    def closed_socket(self) -> None:
        self.sockets -= 1
        if self.sockets < self.limits.max_connections + SLACK:
            self._room.set()

    def admit(self, connection: GuardedConnection) -> bool:
        self.count("accepted")
        if len(self.open) >= self.limits.max_connections:
            victim = next(iter(self.waiting), None)
            self._warn_full()
            if victim is None:
                return False
            self.forget(victim)  # at once: its connection_lost comes later
            victim.close("evicted")
        self.open.add(connection)
        self.waiting[connection] = None
        return True

    def drop_all(self) -> None:
        """Drop every connection still open: at the end, what aiohttp's close left waiting on a
        client that reads nothing (the limits' counts are left alone)."""
        for connection in list(self.open):
            if connection.transport is not None:
                drop(connection.transport)

    def busy(self, connection: GuardedConnection) -> None:
        self.waiting.pop(connection, None)

    def idle(self, connection: GuardedConnection) -> None:
        if connection in self.open:
            self.waiting[connection] = None

    def forget(self, connection: GuardedConnection) -> None:
        self.open.discard(connection)
        self.waiting.pop(connection, None)

    def count(self, what: str) -> None:
        self.counts[what] += 1

    def summary(self) -> str:
        """``accepted=N header_timeout=N body_timeout=N evicted=N refused=N``, for the log."""
        names = ("accepted", "header_timeout", "body_timeout", "evicted", "refused")
        return " ".join(f"{name}={self.counts[name]}" for name in names)

    def _warn_full(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(
                "%d connections open, the most allowed: evicting the longest-waiting idle one "
                "(or refusing the new one); raise max_connections if these are real clients",
                self.limits.max_connections,
            )


@web.middleware
async def guard_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection's guard that a request is in progress; the outermost middleware."""
    transport = request.transport
    connection = transport.get_protocol() if transport is not None else None
    if not isinstance(connection, GuardedConnection):  # a server without the guard (aiohttp's test server)
        return await handler(request)
    connection.request_started(request)
    try:
        response = await handler(request)
        if connection.body_timed_out:
            # Answer now and close: aiohttp would otherwise wait for the rest of the body.
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write_eof()
            request.protocol.force_close()
        return response
    finally:
        connection.request_ended()


@contextlib.asynccontextmanager
async def listen(factory: Callable[[], asyncio.Protocol], config: ServerConfig) -> AsyncIterator[ConnectionGuard]:
    """Accept connections where ``config`` says, for aiohttp's protocol ``factory``, until the block ends.

    The guard it yields has the listening sockets (``listeners``).
    """
    limits = Limits(config.header_timeout, config.body_timeout, fit_open_files(config.max_connections))
    guard = ConnectionGuard(factory, limits)
    guard.listeners = listeners = bind(config.host, config.port)
    accepting = [asyncio.create_task(guard.accept(listener)) for listener in listeners]
    try:
        yield guard
    finally:
        for task in accepting:
            task.cancel()
        await asyncio.gather(*accepting, return_exceptions=True)
        for listener in listeners:
            listener.close()
        log.info("connections: %s", guard.summary())
