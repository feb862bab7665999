"""HTTP for both ends of h2ochat: the client's session and the server's upstream backends.

Exactly one place (:func:`map_errors`) turns aiohttp, socket and proxy
exceptions into h2ochat's own, and exactly one place (:class:`ByteStream`)
applies the first-token and read limits to a streamed answer, so neither the
client's session nor the upstream backends see aiohttp. :class:`Transport`
sends requests to one server root; what to send and what the answers mean is
the caller's business (the protocol's steps, an engine's API).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterator, Mapping
from typing import NoReturn

import aiohttp
from yarl import URL

from h2ochat._compat import timeout_at
from h2ochat._version import user_agent
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
from h2ochat.providers.options import Proxy, RetryPolicy, Timeout, redact

__all__ = ["EVENT_STREAM", "ByteStream", "Transport", "map_errors"]

log = logging.getLogger("h2ochat")
_NO_PROXY = Proxy(None)
_NO_RETRIES = RetryPolicy(0)


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
EVENT_STREAM = ("text/event-stream",)


class Transport:
    """Requests to one server root: a connection pool, a cookie jar, time limits and retries.

    ``cookies=None`` keeps no cookies at all (an upstream engine); a mapping,
    even an empty one, starts a jar that keeps the server's (a chat session).
    ``max_connections=0`` leaves the pool unbounded.
    """

    def __init__(
        self,
        root: str,
        *,
        timeout: Timeout,
        proxy: Proxy = _NO_PROXY,
        retry: RetryPolicy = _NO_RETRIES,
        headers: Mapping[str, str] | None = None,
        cookies: Mapping[str, str] | None = None,
        max_connections: int = 0,
    ) -> None:
        self.root = root
        self.proxy = proxy
        self.timeout = timeout
        self.retry = retry
        self._headers = {"User-Agent": user_agent(), **(headers or {})}
        self._cookies = cookies
        self._max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self._http is None:
            jar: aiohttp.abc.AbstractCookieJar = aiohttp.DummyCookieJar()
            if self._cookies is not None:
                # unsafe=True keeps cookies from servers addressed by IP (127.0.0.1),
                # which aiohttp's default jar silently drops.
                jar = aiohttp.CookieJar(unsafe=True)
                jar.update_cookies(self._cookies, URL(self.root))
            self._http = aiohttp.ClientSession(
                connector=self.proxy.connector(limit=self._max_connections),
                cookie_jar=jar,
                headers=self._headers,
                timeout=self._limits(None),
                trust_env=False,  # proxies from the environment are resolved by proxy_from_env
            )
        return self._http

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

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
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """One non-streaming step's answer body, retried on connection failures, 429 and 502/503/504.

        ``content`` is sent as JSON, ``data`` as a form; ``headers`` go over the session's.
        """
        url = self.root + path
        http = self.client()
        sent = {**(_JSON if content is not None else {}), **(headers or {})} or None
        for attempt in range(self.retry.max_retries + 1):
            try:
                with map_errors(step, url, self.proxy):
                    async with http.request(
                        method,
                        url,
                        data=content if content is not None else data,
                        headers=sent,
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

    async def stream(
        self,
        path: str,
        body: bytes | Mapping[str, str] | None,
        *,
        step: str = "message",
        accept: str = "text/event-stream",
        expect: tuple[str, ...] = EVENT_STREAM,
    ) -> ByteStream:
        """POST ``body`` (None: GET) and return the answer's body as chunks, once its content type is one
        of ``expect``.

        ``body`` is JSON bytes, or the text fields of a ``multipart/form-data`` body
        (current chat-ui's message). The first-token limit starts now. The request is
        retried only when the connection was never made, so the server never saw it; an
        error status raises :class:`HTTPStatusError` (or a subclass) with the body's excerpt.
        """
        url = self.root + path
        headers = {"Accept": accept, **(_JSON if isinstance(body, bytes) else {})}
        method, data = ("GET", None) if body is None else ("POST", _payload(body))
        limit = self.timeout.first_token
        deadline = None if limit is None else asyncio.get_running_loop().time() + limit
        http = self.client()
        for attempt in range(self.retry.max_retries + 1):
            try:
                async with timeout_at(deadline):
                    with map_errors(step, url, self.proxy, phase="connect"):
                        response = await http.request(
                            method, url, data=data, headers=headers, proxy=self.proxy.http_proxy
                        )
                break
            except (ConnectError, ConnectTimeout) as exc:
                if isinstance(exc, ProxyError) or attempt == self.retry.max_retries:
                    raise
            except H2oChatError:
                raise
            except asyncio.TimeoutError:  # builtins.TimeoutError from 3.11; async_timeout raises this one
                raise _first_token_timeout(step, url, limit) from None
            await asyncio.sleep(self.retry.delay(attempt))
        if response.status != 200:
            await self._raise_status(step, response)
        if response.content_type not in expect:
            excerpt = body_excerpt(await response.content.read(1024), response.content_type)
            response.release()
            wanted = "an event stream" if expect == EVENT_STREAM else " or ".join(expect)
            raise ProtocolError(
                f"{step} step: {url} answered {response.content_type or 'no content type'} "
                f"instead of {wanted}: {excerpt}"
            )
        return ByteStream(response, step, url, self, deadline)

    async def _raise_status(self, step: str, response: aiohttp.ClientResponse) -> NoReturn:
        try:
            body = await response.content.read(4096)
        except (aiohttp.ClientError, OSError):
            body = b""
        response.close()  # the rest of an error body is not worth reading
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


class ByteStream:
    """A streamed answer's body, chunk by chunk as it arrives: ``async for chunk in stream``.

    Until the reader reports its first token (:meth:`got_token`), every read
    shares the first-token deadline, so keep-alives do not move it; from then
    on each read may wait the read limit (a keep-alive is an arrival). Failures
    raise h2ochat's errors; the end of the body ends the iteration, and the
    reader decides whether that was too early. Close it (``aclose`` or
    ``async with``): a body not read to its end cuts the connection, which is
    how a server learns that nobody wants the rest of the answer.
    """

    def __init__(
        self, response: aiohttp.ClientResponse, step: str, url: str, transport: Transport, deadline: float | None
    ) -> None:
        self.step = step
        self.url = url
        self._response = response
        self._content = response.content
        self._proxy = transport.proxy
        self._timeout = transport.timeout
        self._read_limit = transport.timeout.read
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._reading = False  # True once the first token came: the read limit applies
        self.events = 0  # whole events the reader decoded (a reattach asks for those after them)
        self.headers = response.headers

    def __aiter__(self) -> ByteStream:
        return self

    async def __anext__(self) -> bytes:
        if self._reading and self._read_limit is not None:
            # Counted from this read, so the reader's own time between reads is not the server's.
            self._deadline = self._loop.time() + self._read_limit
        try:
            async with timeout_at(self._deadline):
                with map_errors(self.step, self.url, self._proxy):
                    chunk = await self._content.readany()
        except H2oChatError:
            raise
        except asyncio.TimeoutError:  # (the same class as TimeoutError from Python 3.11)
            raise self._timed_out() from None
        if not chunk:
            raise StopAsyncIteration
        return chunk

    def got_token(self) -> None:
        """The reader decoded a token: the first-token limit is met, the read limit applies from the next read."""
        self._reading = True
        if self._read_limit is None:
            self._deadline = None

    def _timed_out(self) -> H2oChatError:
        if self._reading:
            error: H2oChatError = ReadTimeout(
                f"{self.step} step: no event from {self.url} within the read limit ({self._timeout.read} s)"
            )
            error.step, error.url = self.step, self.url
            return error
        return _first_token_timeout(self.step, self.url, self._timeout.first_token)

    async def aclose(self) -> None:
        # A finished body lets the connection be reused; anything else must cut it.
        if self._content.is_eof():
            self._response.release()
        else:
            self._response.close()

    async def __aenter__(self) -> ByteStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _payload(body: bytes | Mapping[str, str]) -> bytes | aiohttp.MultipartWriter:
    """JSON bytes as they are; text fields as ``multipart/form-data`` (FormData would send a form of
    text fields only urlencoded, which current chat-ui's message route refuses)."""
    if isinstance(body, bytes):
        return body
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in body.items():
        writer.append(value).set_content_disposition("form-data", name=name)
    return writer


def _first_token_timeout(step: str, url: str, limit: float | None) -> FirstTokenTimeout:
    error = FirstTokenTimeout(f"{step} step: no token from {url} within the first-token limit ({limit} s)")
    error.step, error.url = step, url
    return error
