"""What configures the client's HTTP: time limits, retries and the proxy. Values only, no I/O.

:class:`Timeout` names the phases of a call (connect, first token, read);
:class:`RetryPolicy` the backoff between tries; :class:`Proxy` where
connections go and how to keep its credentials out of messages.
"""

from __future__ import annotations

import random
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

__all__ = ["UNSET", "Proxy", "RetryPolicy", "Timeout", "proxy_from_env", "redact"]


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
