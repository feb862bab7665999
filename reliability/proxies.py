"""Small proxies for the proxy faults: an HTTP proxy and a SOCKS5 proxy, each with a mode.

HTTP proxy modes: ``auth`` answers 407 (credentials required) to everything,
``forbid`` answers 403, ``stall`` never answers, ``tunnel`` works (CONNECT,
and plain forwarding of absolute-form requests) so that a test can show the
refusals are the proxy's and not the set-up's.

SOCKS5 modes: ``refuse`` answers the CONNECT with "connection not allowed by
ruleset", ``auth`` accepts none of the client's authentication methods,
``stall`` never answers, ``tunnel`` works.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
from dataclasses import dataclass, field

__all__ = ["HttpProxy", "Socks5Proxy"]

HTTP_MODES = ("auth", "forbid", "stall", "tunnel")
SOCKS_MODES = ("refuse", "auth", "stall", "tunnel")


@dataclass
class _Proxy:
    mode: str
    seen: int = 0  # connections received
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        """Listen on a free loopback port; returns the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.seen += 1
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # closing; returning normally keeps asyncio from logging the cancelled handler
        finally:
            self._tasks.discard(task)
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class HttpProxy(_Proxy):
    """An HTTP proxy: CONNECT tunnels and absolute-form forwarding, or a refusal."""

    def __post_init__(self) -> None:
        if self.mode not in HTTP_MODES:
            raise ValueError(f"HTTP proxy mode must be one of {HTTP_MODES}")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if self.mode == "stall":
            await reader.read()  # until the client gives up
            return
        if self.mode == "auth":
            await _answer(writer, b"407 Proxy Authentication Required", b'Proxy-Authenticate: Basic realm="test"\r\n')
            return
        if self.mode == "forbid":
            await _answer(writer, b"403 Forbidden", b"")
            return
        method, target, _ = head.split(b" ", 2)
        if method == b"CONNECT":
            host, port = _split_host(target.decode())
            upstream = await asyncio.open_connection(host, port)
            await _answer(writer, b"200 Connection Established", b"", body=False)
            await _pipe(reader, writer, upstream)
            return
        # Forwarding: the origin server gets the request as it came (absolute-form is valid HTTP/1.1).
        authority = target.decode().split("://", 1)[1].split("/", 1)[0]
        upstream = await asyncio.open_connection(*_split_host(authority))
        upstream[1].write(head)
        await _pipe(reader, writer, upstream)


class Socks5Proxy(_Proxy):
    """A SOCKS5 proxy (RFC 1928), no authentication, CONNECT only."""

    def __post_init__(self) -> None:
        if self.mode not in SOCKS_MODES:
            raise ValueError(f"SOCKS proxy mode must be one of {SOCKS_MODES}")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        await reader.readexactly(count)  # the client's methods
        if self.mode == "stall":
            await reader.read()
            return
        if version != 5 or self.mode == "auth":
            writer.write(b"\x05\xff")  # no acceptable authentication method
            await writer.drain()
            return
        writer.write(b"\x05\x00")
        _, command, _, kind = await reader.readexactly(4)
        host = await _socks_address(reader, kind)
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if self.mode == "refuse" or command != 1:
            writer.write(b"\x05\x02\x00\x01" + bytes(4) + bytes(2))  # connection not allowed by ruleset
            await writer.drain()
            return
        upstream = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
        await _pipe(reader, writer, upstream)


async def _socks_address(reader: asyncio.StreamReader, kind: int) -> str:
    if kind == 1:
        return str(ipaddress.IPv4Address(await reader.readexactly(4)))
    if kind == 4:
        return str(ipaddress.IPv6Address(await reader.readexactly(16)))
    if kind == 3:
        (length,) = await reader.readexactly(1)
        return (await reader.readexactly(length)).decode()
    raise ValueError(f"unknown SOCKS address type {kind}")


def _split_host(authority: str) -> tuple[str, int]:
    host, _, port = authority.rpartition(":")
    return host.strip("[]"), int(port)


async def _answer(writer: asyncio.StreamWriter, status: bytes, headers: bytes, body: bool = True) -> None:
    length = b"Content-Length: 0\r\n" if body else b""
    writer.write(b"HTTP/1.1 " + status + b"\r\n" + headers + length + b"\r\n")
    await writer.drain()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy both ways until either side closes."""

    async def copy(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                target.write(data)
                await target.drain()

    up_reader, up_writer = upstream
    tasks = [asyncio.ensure_future(copy(reader, up_writer)), asyncio.ensure_future(copy(up_reader, writer))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        up_writer.close()  # first, and without awaiting: nothing may skip it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
