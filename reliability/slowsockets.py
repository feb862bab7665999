"""Slow clients over raw loopback sockets: idle, dribbling a request head, dribbling a body,
and asking for an answer then never reading it.

Each one records what the server did to it: closed it (after how long), answered
it (the status, e.g. 408 for a stalled body), or left it open until the end.
Every loop is bounded by a deadline; the sockets are always closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "Outcome",
    "closed_by_server",
    "dribble_body",
    "dribble_head",
    "idle",
    "open_socket",
    "read_until_closed",
    "status_of",
    "stop_reading",
]

HEAD = "GET /api/models HTTP/1.1\r\nHost: {host}\r\n"
BODY_HEAD = "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"


@dataclass
class Outcome:
    """What became of one slow connection."""

    kind: str
    closed: bool  # by the server, before the client gave up
    seconds: float  # from connecting (the kernel's handshake) to the close, or to giving up
    answer: bytes = b""  # what the server sent, if anything

    @property
    def status(self) -> int | None:
        return status_of(self.answer)


def status_of(answer: bytes) -> int | None:
    """The status code of an HTTP/1.1 answer, or None when there is none."""
    if not answer.startswith(b"HTTP/1."):
        return None
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


async def open_socket(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A raw connection to ``url``'s host and port; also the Host header to send."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    return reader, writer, parts.netloc


async def read_until_closed(reader: asyncio.StreamReader, limit: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes, or ``limit`` seconds pass: (bytes, closed)."""
    received = bytearray()
    deadline = time.monotonic() + limit
    while (left := deadline - time.monotonic()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except asyncio.TimeoutError:
            return bytes(received), False
        except ConnectionError:
            return bytes(received), True
        if not chunk:
            return bytes(received), True
        received += chunk
    return bytes(received), False


async def idle(url: str, limit: float) -> Outcome:
    """Connect and send nothing."""
    reader, writer, _ = await open_socket(url)
    started = time.monotonic()
    try:
        answer, closed = await read_until_closed(reader, limit)
    finally:
        writer.close()
    return Outcome("idle", closed, time.monotonic() - started, answer)


async def dribble_head(url: str, limit: float, every: float = 0.5) -> Outcome:
    """Send a request head one header line at a time, never the blank line that ends it."""
    reader, writer, host = await open_socket(url)
    started = time.monotonic()
    lines = itertools.chain([HEAD.format(host=host)], (f"X-Slow-{n}: aaaaaaaa\r\n" for n in itertools.count()))
    return await _dribble("head", reader, writer, lines, started, limit, every)


async def dribble_body(url: str, limit: float, every: float = 0.5, path: str = "/v1/chat/completions") -> Outcome:
    """Send a complete head announcing 1,000 bytes of body, then the body a byte at a time."""
    reader, writer, host = await open_socket(url)
    started = time.monotonic()
    head = BODY_HEAD.format(path=path, host=host, length=1000)
    chunks = iter([head] + ["{"] + [" "] * 998)
    return await _dribble("body", reader, writer, chunks, started, limit, every)


async def _dribble(
    kind: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    chunks: Iterator[str],
    started: float,
    limit: float,
    every: float,
) -> Outcome:
    """Write one chunk every ``every`` seconds until the server answers or closes, or ``limit`` passes."""
    deadline = started + limit
    answer, closed = b"", False
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(StopIteration):
                writer.write(next(chunks).encode())
            try:
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            answer, closed = await read_until_closed(reader, min(every, max(0.0, deadline - time.monotonic())))
            if closed or answer:
                break
        if answer and not closed:  # an answer: wait for the close that follows it
            more, closed = await read_until_closed(reader, max(0.0, deadline - time.monotonic()))
            answer += more
    finally:
        writer.close()
    return Outcome(kind, closed, time.monotonic() - started, answer)


async def stop_reading(url: str, request: bytes) -> socket.socket:
    """Send ``request`` ({host} in it is filled in), read the answer's status line, then never read again.

    The receive buffer is the smallest the kernel allows, so that the answer stays in the server's
    buffers. Once the status line is here the server has finished with the request's head (an
    answer whole, like a static file, has left its handler). The caller closes the socket.
    """
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # before connecting: it sets the window
        client.setblocking(False)
        await loop.sock_connect(client, (parts.hostname, parts.port))
        await loop.sock_sendall(client, request.replace(b"{host}", parts.netloc.encode()))
        status = b""
        while len(status) < len(b"HTTP/1.1 200"):
            chunk = await loop.sock_recv(client, len(b"HTTP/1.1 200") - len(status))
            if not chunk:
                raise ConnectionResetError("the server closed the connection before answering")
            status += chunk
    except BaseException:
        client.close()
        raise
    return client


_TCP_ESTABLISHED = 1


def closed_by_server(client: socket.socket) -> bool:
    """Whether the server closed (or reset) this connection, seen without reading from it.

    A client that never reads cannot see the close in its data: the kernel's connection state
    says it (Linux's TCP_INFO; elsewhere, a pending reset error).
    """
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is not None:
        state = struct.unpack("B", client.getsockopt(socket.IPPROTO_TCP, tcp_info, 1))[0]
        return bool(state != _TCP_ESTABLISHED)
    return client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0
