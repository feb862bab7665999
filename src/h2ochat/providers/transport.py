"""HTTP plumbing for the client: time limits, retries, proxies, error mapping, requests.

Exactly one place (:func:`map_errors`) turns aiohttp, socket and proxy
exceptions into h2ochat's own, so the provider code only ever sees those.
:class:`Transport` sends a session's requests to one server root; the
protocol's steps (what to send, what the answers mean) live in the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import aiohttp
from yarl import URL

from h2ochat._compat import timeout_at
from h2ochat.protocol.errors import (
    ConnectError,
    ConnectTimeout,
    FirstTokenTimeout,
    H2oChatError,
    ProtocolError,
    ProxyError,
    RateLimited,
    ReadError,
    ReadTimeout,
    body_excerpt,
    error_for_status,
)

__all__ = [
    "RetryPolicy",
    "Timeout",
    "Proxy",
    "Transport",
    "first_token_timeout",
    "map_errors",
    "proxy_from_env",
    "redact",
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


_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_JSON = {"Content-Type": "application/json"}


def first_token_timeout(url: str, limit: float | None) -> FirstTokenTimeout:
    return FirstTokenTimeout(f"message step: no token from {url} within the first-token limit ({limit} s)")


class Transport:
    """The requests of one session to one server root: a cookie jar, a pool, limits and retries."""

    def __init__(
        self,
        root: str,
        proxy: Proxy,
        timeout: Timeout,
        retry: RetryPolicy,
        headers: dict[str, str],
        cookies: dict[str, str],
        max_connections: int,
    ) -> None:
        self.root = root
        self.proxy = proxy
        self.timeout = timeout
        self.retry = retry
        self._headers = headers
        self._cookies = cookies
        self._max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self._http is None:
            # unsafe=True keeps cookies from servers addressed by IP (127.0.0.1),
            # which aiohttp's default jar silently drops.
            jar = aiohttp.CookieJar(unsafe=True)
            if self._cookies:
                jar.update_cookies(self._cookies, URL(self.root))
            self._http = aiohttp.ClientSession(
                connector=self.proxy.connector(limit=self._max_connections),
                cookie_jar=jar,
                headers={"User-Agent": _user_agent(), "Referer": self.root + "/", **self._headers},
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._handshake_limit(), sock_connect=self.timeout.connect
                ),
                trust_env=False,  # proxies from the environment are resolved by proxy_from_env
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _handshake_limit(self) -> float | None:
        """aiohttp's ``connect`` limit, set only for an https:// server behind an HTTP proxy.

        There, ``sock_connect`` bounds the TCP connection to the proxy but not the proxy's
        answer to CONNECT, which aiohttp waits for without any limit: a proxy that accepts
        and never answers would hang the call. aiohttp's ``connect`` limit covers it, and
        also the wait for a free pooled connection, which is why it is not set elsewhere.
        """
        if self.proxy.http_proxy and URL(self.root).scheme == "https":
            return self.timeout.connect
        return None

    def _limits(self, read: float | None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, connect=self._handshake_limit(), sock_connect=self.timeout.connect, sock_read=read
        )

    async def request(
        self,
        step: str,
        method: str,
        path: str,
        *,
        data: dict[str, str] | None = None,
        content: bytes | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> bytes:
        """One non-streaming step's answer body, retried on connection failures, 429 and 502/503/504."""
        url = self.root + path
        http = self.client()
        for attempt in range(self.retry.max_retries + 1):
            try:
                with map_errors(step, url, self.proxy):
                    async with http.request(
                        method,
                        url,
                        data=content if content is not None else data,
                        headers=_JSON if content is not None else None,
                        proxy=self.proxy.http_proxy,
                        allow_redirects=False,
                        timeout=self._limits(self.timeout.read),
                    ) as response:
                        body = await response.read()
                if response.status in ok:
                    log.debug("%s %s -> %s", method, redact(url), response.status)
                    return body
                error = self._status_error(step, response, url, body)
                retryable = response.status in _RETRY_STATUSES
            except (ConnectError, ConnectTimeout, ReadError, ReadTimeout) as exc:
                error, retryable = exc, not isinstance(exc, ProxyError)
            if not retryable or attempt == self.retry.max_retries:
                raise error
            wait = self.retry.delay(attempt, error.retry_after if isinstance(error, RateLimited) else None)
            log.info("%s step failed (%s); retrying in %.2f s", step, error, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def open_stream(self, path: str, body: bytes, deadline: float | None) -> aiohttp.ClientResponse:
        """POST ``body`` and return the response once it is known to be an event stream.

        Retried only when the connection was never made (so the server never
        saw the message); ``deadline`` (loop time) is the first-token limit.
        """
        url = self.root + path
        http = self.client()
        for attempt in range(self.retry.max_retries + 1):
            try:
                async with timeout_at(deadline):
                    with map_errors("message", url, self.proxy, phase="connect"):
                        response = await http.post(
                            url, data=body, headers=_JSON, proxy=self.proxy.http_proxy, timeout=self._limits(None)
                        )
                break
            except (ConnectError, ConnectTimeout) as exc:
                if isinstance(exc, ProxyError) or attempt == self.retry.max_retries:
                    raise
            except H2oChatError:
                raise
            except asyncio.TimeoutError:  # builtins.TimeoutError from 3.11; async_timeout raises this one
                raise first_token_timeout(url, self.timeout.first_token) from None
            await asyncio.sleep(self.retry.delay(attempt))
        if response.status != 200:
            await self._raise_status("message", response)
        if response.content_type != "text/event-stream":
            excerpt = body_excerpt(await response.content.read(1024), response.content_type)
            response.release()
            raise ProtocolError(
                f"message step: {url} answered {response.content_type or 'no content type'} "
                f"instead of an event stream: {excerpt}"
            )
        return response

    async def _raise_status(self, step: str, response: aiohttp.ClientResponse) -> NoReturn:
        try:
            body = await response.content.read(4096)
        except aiohttp.ClientError:
            body = b""
        response.release()
        raise self._status_error(step, response, str(response.url), body)

    def _status_error(self, step: str, response: aiohttp.ClientResponse, url: str, body: bytes) -> H2oChatError:
        if response.status == 407 and self.proxy.url:
            # Through an HTTP proxy, a plain http:// request is forwarded rather than tunnelled, so the
            # proxy's refusal arrives as an ordinary answer; it is still the proxy wanting credentials.
            error: H2oChatError = ProxyError(
                f"the proxy {redact(self.proxy.url)} wants credentials (HTTP 407, {step} step, {url}): "
                "put user:password@ in the proxy URL"
            )
            error.step, error.url = step, url
            return error
        return error_for_status(
            step,
            response.status,
            url,
            body,
            response.headers.get("Content-Type", ""),
            response.headers.get("Retry-After"),
        )


def _user_agent() -> str:
    from h2ochat import __version__

    return f"h2ochat/{__version__}"
