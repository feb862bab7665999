"""Reading a page named by a search result without ever reaching an address the deployment did not allow.

A result's address is untrusted: a page (or a redirect) naming ``127.0.0.1``, ``169.254.169.254`` or
an intranet host is the classic way in to a private network. So each host is resolved once, every
address it resolves to is checked, and the connection is made to the checked address (a pinned
resolver: a second lookup could answer otherwise). Redirects are followed by hand, at most
``MAX_REDIRECTS``, each checked the same way. Only ``http``/``https`` on ports 80 and 443, unless the
address is one ``allow_private`` names (tests, intranets: any port there).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

__all__ = ["MAX_REDIRECTS", "Fetched", "Refused", "Resolver", "SafeFetcher", "system_resolver"]

MAX_REDIRECTS = 3
READABLE = ("text/html", "text/plain", "application/xhtml+xml")

Resolver = Callable[[str], Awaitable[list[str]]]
"""A host name to its addresses (injectable: tests name what a host resolves to)."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """A page not read, and why (a skipped source in the search's progress, never a crash)."""


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    text: str


async def system_resolver(host: str) -> list[str]:
    import asyncio

    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _Pinned(AbstractResolver):
    """Answers only the one host, with the address already checked."""

    def __init__(self, host: str, address: str) -> None:
        self.host, self.address = host, address

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        if host != self.host:
            raise OSError(f"{host} was not checked")
        ip = ipaddress.ip_address(self.address)
        return [
            ResolveResult(
                hostname=host,
                host=self.address,
                port=port,
                family=socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


def forbidden(address: Address) -> str | None:
    """Why an address may not be fetched from, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 address"
    for test, what in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(address, test):
            return what
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.ip_network("fc00::/7"):
        return "a unique-local address"
    return None


class SafeFetcher:
    def __init__(
        self,
        *,
        allow_private: list[str],
        timeout: float,
        max_bytes: int,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.allowed = [ipaddress.ip_network(entry, strict=False) for entry in allow_private if entry != "*"]
        self.allow_all = "*" in allow_private
        self.timeout, self.max_bytes, self.resolver = timeout, max_bytes, resolver

    def _trusted(self, address: Address) -> bool:
        return self.allow_all or any(address in network for network in self.allowed)

    async def _check(self, url: URL) -> tuple[str, str]:
        """The host and the one address to connect to, or :class:`Refused`."""
        if url.scheme not in ("http", "https") or not url.host:
            raise Refused(f"{url.scheme or 'no'} scheme: only http and https pages are read")
        host = url.host.strip("[]")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a.split("%")[0]) for a in await self.resolver(host)]
            except (OSError, ValueError) as exc:
                raise Refused(f"{host} could not be resolved ({exc})") from None
        if not addresses:
            raise Refused(f"{host} resolves to no address")
        for address in addresses:  # every one: a name with one public and one private address is refused
            why = forbidden(address)
            if why is not None and not self._trusted(address):
                raise Refused(f"{host} is {why} ({address}), which this server does not fetch from")
        if url.port not in (80, 443) and not all(self._trusted(a) for a in addresses):
            raise Refused(f"port {url.port}: only ports 80 and 443 are read")
        return url.host, str(addresses[0])

    async def fetch(self, url: str) -> Fetched:
        current = URL(url)
        for _ in range(MAX_REDIRECTS + 1):
            host, address = await self._check(current)
            connector = aiohttp.TCPConnector(resolver=_Pinned(host, address), use_dns_cache=False)
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                try:
                    async with session.get(current, allow_redirects=False) as response:
                        location = response.headers.get("Location")
                        if response.status in (301, 302, 303, 307, 308) and location:
                            current = URL(urljoin(str(current), location))
                            continue
                        return await self._read(response, str(current))
                # asyncio's: on Python 3.10 it is not yet the built-in TimeoutError.
                except asyncio.TimeoutError:
                    raise Refused(f"no answer within {self.timeout:g} s") from None
                except aiohttp.ClientError as exc:
                    raise Refused(f"could not be read ({type(exc).__name__}: {exc})") from None
        raise Refused(f"more than {MAX_REDIRECTS} redirects")

    async def _read(self, response: Any, url: str) -> Fetched:
        if response.status != 200:
            raise Refused(f"HTTP {response.status}")
        kind = response.content_type or ""
        if kind not in READABLE:
            raise Refused(f"{kind or 'no content type'}: only HTML and text pages are read")
        if (response.content_length or 0) > self.max_bytes:
            raise Refused(f"larger than {self.max_bytes // 1024} KiB")
        body = await response.content.read(self.max_bytes + 1)
        while len(body) <= self.max_bytes and not response.content.at_eof():
            more = await response.content.read(self.max_bytes + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > self.max_bytes:
            raise Refused(f"larger than {self.max_bytes // 1024} KiB")
        return Fetched(url, kind, body.decode(response.charset or "utf-8", errors="replace"))
