"""Small proxies for the tests and the proxy faults: HTTP, SOCKS5 and SOCKS4, each with a mode.

HTTP proxy modes: ``auth`` answers 407 (credentials required) to everything,
``forbid`` answers 403, ``stall`` never answers, ``tunnel`` works (CONNECT,
and plain forwarding of absolute-form requests) so that a test can show the
refusals are the proxy's and not the set-up's.

SOCKS5 modes: ``refuse`` answers the CONNECT with "connection not allowed by
ruleset", ``auth`` accepts none of the client's authentication methods,
``stall`` never answers, ``tunnel`` works. SOCKS4 only tunnels.

A working proxy given ``user`` and ``password`` requires them (HTTP Basic,
SOCKS5 username/password) and counts the connections it ``refused``; every
proxy records the ``targets`` it connected to. ``async with`` starts and
closes one; ``url`` is its address, credentials included.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import struct
from dataclasses import dataclass, field

__all__ = ["HttpProxy", "Socks4Proxy", "Socks5Proxy"]

HTTP_MODES = ("auth", "forbid", "stall", "tunnel")
SOCKS_MODES = ("refuse", "auth", "stall", "tunnel")


@dataclass
class _Proxy:
    mode: str = "tunnel"
    user: str | None = None
    password: str | None = None
    seen: int = 0  # connections received
    refused: int = 0  # connections refused for their credentials
    targets: list[str] = field(default_factory=list)  # host:port (or URL) of each connection made
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    scheme = ""

    async def start(self) -> int:
        """Listen on a free loopback port; returns the port."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        credentials = f"{self.user}:{self.password}@" if self.user is not None else ""
        return f"{self.scheme}://{credentials}127.0.0.1:{self.port}"

    async def __aenter__(self) -> _Proxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

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

    scheme = "http"

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
        if self.user is not None and _proxy_authorization(head) != _basic(self.user, self.password or ""):
            self.refused += 1
            await _answer(writer, b"407 Proxy Authentication Required", b'Proxy-Authenticate: Basic realm="test"\r\n')
            return
        method, target, _ = head.split(b" ", 2)
        self.targets.append(target.decode())
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
    """A SOCKS5 proxy (RFC 1928), CONNECT only; username/password (RFC 1929) when ``user`` is set."""

    scheme = "socks5"

    def __post_init__(self) -> None:
        if self.mode not in SOCKS_MODES:
            raise ValueError(f"SOCKS proxy mode must be one of {SOCKS_MODES}")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if self.mode == "stall":
            await reader.read()
            return
        method = 0x00 if self.user is None else 0x02
        if version != 5 or self.mode == "auth" or method not in methods:
            writer.write(b"\x05\xff")  # no acceptable authentication method
            await writer.drain()
            return
        writer.write(bytes([5, method]))
        if self.user is not None and not await self._authenticate(reader, writer):
            self.refused += 1
            return
        _, command, _, kind = await reader.readexactly(4)
        host = await _socks_address(reader, kind)
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if self.mode == "refuse" or command != 1:
            writer.write(b"\x05\x02\x00\x01" + bytes(4) + bytes(2))  # connection not allowed by ruleset
            await writer.drain()
            return
        self.targets.append(f"{host}:{port}")
        upstream = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
        await _pipe(reader, writer, upstream)

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        _, length = await reader.readexactly(2)
        name = (await reader.readexactly(length)).decode()
        (length,) = await reader.readexactly(1)
        secret = (await reader.readexactly(length)).decode()
        ok = (name, secret) == (self.user, self.password)
        writer.write(b"\x01\x00" if ok else b"\x01\x01")
        await writer.drain()
        return ok


class Socks4Proxy(_Proxy):
    """A SOCKS4 proxy: CONNECT to an IPv4 address (the user id is ignored)."""

    scheme = "socks4"

    def __post_init__(self) -> None:
        if self.mode != "tunnel" or self.user is not None:
            raise ValueError("a SOCKS4 proxy only tunnels, without credentials")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, command, port = struct.unpack("!BBH", await reader.readexactly(4))
        host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        await reader.readuntil(b"\0")  # the user id
        if (version, command) != (4, 1):
            writer.write(b"\x00\x5b" + bytes(6))  # rejected
            await writer.drain()
            return
        self.targets.append(f"{host}:{port}")
        upstream = await asyncio.open_connection(host, port)
        writer.write(b"\x00\x5a" + bytes(6))  # granted
        await _pipe(reader, writer, upstream)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _proxy_authorization(head: bytes) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "proxy-authorization":
            return value.strip()
    return None


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
