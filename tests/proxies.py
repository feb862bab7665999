"""Minimal HTTP and SOCKS5 proxies for tests: just enough of each protocol, with credentials."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

__all__ = ["ProxyServer", "http_proxy", "socks4_proxy", "socks5_proxy"]


@dataclass
class ProxyServer:
    url: str
    connections: int = 0
    refused: int = 0
    targets: list[str] = field(default_factory=list)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


async def _tunnel(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter], host: str, port: int, first: bytes = b""
) -> None:
    upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
    upstream_writer.write(first)
    reader, writer = client
    await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


@contextlib.asynccontextmanager
async def http_proxy(user: str | None = None, password: str | None = None) -> AsyncIterator[ProxyServer]:
    """A forward proxy for http:// targets (absolute-form requests), optionally with Basic auth.

    After the first request's credentials are checked, the connection is tunnelled to the target:
    HTTP servers accept absolute-form request lines, so nothing needs rewriting.
    """
    expected = None if user is None else "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    state = ProxyServer("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        if expected is not None and headers.get("Proxy-Authorization") != expected:
            state.refused += 1
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
            writer.close()
            return
        state.targets.append(target)
        host_port = target.split("/")[2]
        host, _, port = host_port.partition(":")
        await _tunnel((reader, writer), host, int(port or 80), head)

    async with _serve(handle) as port:
        state.url = f"http://{user}:{password}@127.0.0.1:{port}" if user else f"http://127.0.0.1:{port}"
        yield state


@contextlib.asynccontextmanager
async def socks5_proxy(user: str | None = None, password: str | None = None) -> AsyncIterator[ProxyServer]:
    """A SOCKS5 proxy (RFC 1928) with optional username/password auth (RFC 1929), CONNECT only."""
    state = ProxyServer("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        _, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        method = 0x02 if user is not None else 0x00
        if method not in methods:
            writer.write(b"\x05\xff")
            writer.close()
            return
        writer.write(bytes([5, method]))
        if user is not None and not await _authenticate(reader, writer, user, password or ""):
            state.refused += 1
            return
        _, _command, _, address_type = await reader.readexactly(4)  # CONNECT is assumed
        if address_type == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        state.targets.append(f"{host}:{port}")
        writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", port))
        await _tunnel((reader, writer), host, port)

    async with _serve(handle) as port:
        state.url = f"socks5://{user}:{password}@127.0.0.1:{port}" if user else f"socks5://127.0.0.1:{port}"
        yield state


@contextlib.asynccontextmanager
async def socks4_proxy() -> AsyncIterator[ProxyServer]:
    """A SOCKS4 proxy (CONNECT to an IPv4 address; the user id is ignored)."""
    state = ProxyServer("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        version, command, port = struct.unpack("!BBH", await reader.readexactly(4))
        host = socket.inet_ntoa(await reader.readexactly(4))
        await reader.readuntil(b"\0")  # the user id
        if (version, command) != (4, 1):
            writer.write(b"\x00\x5b" + bytes(6))  # rejected
            writer.close()
            return
        state.targets.append(f"{host}:{port}")
        writer.write(b"\x00\x5a" + bytes(6))  # granted
        await _tunnel((reader, writer), host, port)

    async with _serve(handle) as port:
        state.url = f"socks4://127.0.0.1:{port}"
        yield state


async def _authenticate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: str, password: str) -> bool:
    _, length = await reader.readexactly(2)
    name = (await reader.readexactly(length)).decode()
    (length,) = await reader.readexactly(1)
    secret = (await reader.readexactly(length)).decode()
    ok = (name, secret) == (user, password)
    writer.write(b"\x01\x00" if ok else b"\x01\x01")
    await writer.drain()
    if not ok:
        writer.close()
    return ok


@contextlib.asynccontextmanager
async def _serve(handle: object) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handle(reader, writer)  # type: ignore[operator]
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()
        finally:
            tasks.discard(task)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
