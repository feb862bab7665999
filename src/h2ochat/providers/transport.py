"""HTTP plumbing for the client: time limits, retries, proxies and error mapping.

Exactly one place (:func:`map_errors`) turns aiohttp, socket and proxy
exceptions into h2ochat's own, so the provider code only ever sees those.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from h2ochat.protocol.errors import (
    ConnectError,
    ConnectTimeout,
    H2oChatError,
    ProxyError,
    ReadError,
    ReadTimeout,
)

if sys.version_info >= (3, 11):
    from asyncio import timeout_at
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout_at

__all__ = [
    "RetryPolicy",
    "Timeout",
    "Proxy",
    "map_errors",
    "proxy_from_env",
    "redact",
    "timeout_at",
]

log = logging.getLogger("h2ochat")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Timeout:
    """Time limits for each phase of a call, in seconds; ``None`` disables one.

    ``connect`` bounds opening a connection; ``first_token`` the wait from
    sending the message to its first token (keep-alives do not count);
    ``read`` the wait for each later event and for the other steps' answers.
    There is no limit on the whole call, so a long answer is never cut.
    ``Timeout(30)`` sets every phase to 30 seconds.
    """

    connect: float | None
    first_token: float | None
    read: float | None

    def __init__(
        self,
        default: float | None = UNSET,
        *,
        connect: float | None = UNSET,
        first_token: float | None = UNSET,
        read: float | None = UNSET,
    ) -> None:
        defaults = {"connect": 10.0, "first_token": 120.0, "read": 60.0}
        for name, value in (("connect", connect), ("first_token", first_token), ("read", read)):
            if value is UNSET:
                value = defaults[name] if default is UNSET else default
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"timeout {name} must be a positive number of seconds or None, got {value!r}")
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, value: Timeout | float | None) -> Timeout:
        """Accept a ``Timeout``, a number for every phase, or ``None`` for no limits."""
        return value if isinstance(value, Timeout) else cls(value)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's Retry-After wins, up to ``max_wait``."""

    max_retries: int = 2
    base: float = 0.5
    max_wait: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, got {self.max_retries!r}")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_wait)
        return random.uniform(0, min(self.max_wait, self.base * 2**attempt))


def redact(url: str | URL | None) -> str:
    """A URL safe to print: any password (and user name) replaced."""
    if url is None:
        return ""
    parsed = URL(str(url))
    if parsed.user is None and parsed.password is None:
        return str(parsed)
    return str(parsed.with_user("***").with_password(None if parsed.password is None else "***"))


_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


def proxy_from_env(target: URL) -> str | None:
    """The proxy the standard environment variables give for ``target``, if any.

    ``https_proxy``/``http_proxy`` by scheme, then ``all_proxy``; ``no_proxy``
    is honoured, and loopback addresses are never proxied (a local server is
    the common case and a corporate proxy cannot reach it).
    """
    host = target.host or ""
    if host in _LOOPBACK or host.startswith("127."):
        return None
    proxies = urllib.request.getproxies()
    if proxies.get("no") and urllib.request.proxy_bypass(host):
        return None
    return proxies.get(target.scheme) or proxies.get("all")


@dataclass(frozen=True)
class Proxy:
    """Where to send connections: aiohttp's own ``proxy=`` or a SOCKS connector."""

    url: str | None

    def __post_init__(self) -> None:
        if self.url is None:
            return
        scheme = URL(self.url).scheme
        if scheme not in ("http", "https", "socks4", "socks4a", "socks5", "socks5h"):
            raise ValueError(
                f"unsupported proxy scheme {scheme!r} in {redact(self.url)}: "
                "use http://, https://, socks4:// or socks5:// (user:password@ allowed)"
            )

    @property
    def is_socks(self) -> bool:
        return self.url is not None and self.url.startswith("socks")

    @property
    def http_proxy(self) -> str | None:
        """The value for aiohttp's ``proxy=`` argument (None for SOCKS, handled by the connector)."""
        return None if self.is_socks else self.url

    def connector(self, **kwargs: Any) -> aiohttp.BaseConnector:
        if self.is_socks:
            from aiohttp_socks import ProxyConnector

            # socks5h/socks4a mean "let the proxy resolve names", which aiohttp-socks does with rdns.
            url = self.url or ""
            rdns = url.startswith(("socks5h", "socks4a"))
            url = url.replace("socks5h://", "socks5://", 1).replace("socks4a://", "socks4://", 1)
            return ProxyConnector.from_url(url, rdns=rdns, **kwargs)
        return aiohttp.TCPConnector(**kwargs)

    def scrub(self, text: str) -> str:
        """Remove the proxy's credentials from a message that may quote them."""
        if not self.url:
            return text
        parsed = URL(self.url)
        for secret in (parsed.password, parsed.raw_password, parsed.user, parsed.raw_user):
            if secret:
                text = text.replace(secret, "***")
        return text


@contextlib.contextmanager
def map_errors(step: str, url: str, proxy: Proxy, phase: str = "read") -> Iterator[None]:
    """Turn transport exceptions into h2ochat errors, most specific first.

    ``phase`` says whether the request was still connecting, which decides
    between ``ConnectTimeout`` and ``ReadTimeout``.
    """
    try:
        yield
    except H2oChatError:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        mapped = _map(exc, step, url, proxy, phase)
        if mapped is None:
            raise
        mapped.step = step
        mapped.url = url
        raise mapped from exc


def _map(exc: Exception, step: str, url: str, proxy: Proxy, phase: str) -> H2oChatError | None:
    where = f"{step} step, {url}"
    detail = proxy.scrub(str(exc) or type(exc).__name__)
    via = f" through the proxy {redact(proxy.url)}" if proxy.url else ""
    socks_error = _socks_error(exc)
    if socks_error is not None:
        return socks_error(f"the proxy {redact(proxy.url)} failed ({where}): {detail}")
    if isinstance(exc, (aiohttp.ClientProxyConnectionError, aiohttp.ClientHttpProxyError)):
        return ProxyError(f"the proxy {redact(proxy.url)} refused or failed the connection ({where}): {detail}")
    if isinstance(exc, aiohttp.ConnectionTimeoutError) or (
        phase == "connect" and isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError))
    ):
        return ConnectTimeout(f"timed out connecting{via} ({where})")
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return ReadTimeout(f"timed out waiting for the server{via} ({where})")
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError, ssl.SSLError)):
        return ConnectError(f"TLS failed{via} ({where}): {detail}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(f"could not connect{via} ({where}): {detail}")
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError)):
        return ReadError(f"the connection broke ({where}): {detail}")
    if isinstance(exc, aiohttp.InvalidURL):
        return ConnectError(f"invalid URL ({where}): {detail}")
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return ReadError(f"the request failed ({where}): {detail}")
    return None


def _socks_error(exc: Exception) -> type[H2oChatError] | None:
    module = type(exc).__module__ or ""
    if not module.startswith(("python_socks", "aiohttp_socks")):
        return None
    # A SOCKS handshake that times out is still the connection being opened.
    return ConnectTimeout if "Timeout" in type(exc).__name__ else ProxyError
