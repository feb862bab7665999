"""What the two upstream backends (tgi, openai) share: the HTTP session, the time limits, the failures.

A subclass says where to post, what to send, and how to turn the answer's
bytes into tokens (a :class:`TokenDecoder`); this class does the rest.

Failures before the first token raise :class:`EndpointUnavailable` when
another endpoint could do better (connection refused or broken, a timeout,
5xx, 429), so that the model's runtime can try one; a refusal of the request
itself (400, 422, 401...) raises a plain :class:`BackendError`. After the
first token, a broken, stalled or cut stream is ``incomplete_generation``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

import aiohttp

from h2ochat._compat import timeout_at
from h2ochat.protocol.errors import body_excerpt
from h2ochat.server.backends import BackendError, EndpointUnavailable, GeneratedToken, GenerationRequest
from h2ochat.server.config import UpstreamEndpoint

__all__ = ["TokenDecoder", "UpstreamBackend", "status_error"]

# Upstream statuses as TGI error types; any other status is "generation".
_STATUS_TYPES = {400: "validation", 422: "validation", 429: "overloaded", 503: "overloaded"}
_JSON = {"Content-Type": "application/json", "Accept": "text/event-stream"}


class TokenDecoder(Protocol):
    """Bytes of an upstream answer in, tokens out; an error the upstream reports raises BackendError.

    ``feed`` is best written as a generator, so that the tokens that came before an
    error in the same read are handed out before the error is raised.
    """

    def feed(self, chunk: bytes) -> Iterable[GeneratedToken]: ...


def status_error(url: str, status: int, excerpt: str) -> BackendError:
    """The error for an upstream's HTTP error status (before any token, so 5xx and 429 may fail over)."""
    error_type = _STATUS_TYPES.get(status, "generation")
    cls = EndpointUnavailable if status == 429 or status >= 500 else BackendError
    return cls(f"{url} answered HTTP {status}: {excerpt}", error_type)


class UpstreamBackend:
    """Streams tokens from an inference engine over HTTP; one aiohttp session per endpoint."""

    path = ""  # where to post, after the endpoint's url

    def __init__(self, endpoint: UpstreamEndpoint) -> None:
        self.endpoint = endpoint
        self.url = endpoint.url.rstrip("/")
        self.max_concurrency: int | None = endpoint.max_concurrency
        self._http: aiohttp.ClientSession | None = None

    def headers(self) -> dict[str, str]:
        """Headers for every request (an API key); called once, in ``start``."""
        return {}

    def body(self, request: GenerationRequest) -> bytes:
        raise NotImplementedError

    def decoder(self) -> TokenDecoder:
        raise NotImplementedError

    async def start(self) -> None:
        from h2ochat import __version__

        self._http = aiohttp.ClientSession(
            # No pool limit: the model's queue (max_concurrency) is what limits requests.
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.endpoint.connect_timeout),
            headers={"User-Agent": f"h2ochat/{__version__}", **self.headers()},
        )

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GeneratedToken]:
        """Post the request and yield its tokens; closing early closes the upstream connection,
        which is how TGI, vLLM and llama.cpp's server learn to stop generating."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.endpoint.first_token_timeout
        response = await self._post(self.body(request), deadline)
        decoder = self.decoder()
        started = False
        try:
            while True:
                chunk = await self._read(response, deadline, started)
                if not chunk:
                    raise self._failure("the stream ended before its last token", started)
                for token in decoder.feed(chunk):
                    started = True
                    deadline = loop.time() + self.endpoint.read_timeout
                    yield token
                    if token.finish_reason is not None:
                        return
        finally:
            # A finished body lets the connection be reused; anything else must cut it.
            if response.content.is_eof():
                response.release()
            else:
                response.close()

    async def _post(self, body: bytes, deadline: float) -> aiohttp.ClientResponse:
        if self._http is None:
            raise BackendError(f"the endpoint {self.url} is not started")
        url = self.url + self.path
        try:
            async with timeout_at(deadline):
                response = await self._http.post(url, data=body, headers=_JSON)
        except aiohttp.ClientError as exc:  # first: aiohttp's connect timeout is also a TimeoutError
            raise EndpointUnavailable(f"could not reach {url}: {exc or type(exc).__name__}") from exc
        except asyncio.TimeoutError:
            raise self._timeout(started=False) from None
        except OSError as exc:
            raise EndpointUnavailable(f"could not reach {url}: {exc or type(exc).__name__}") from exc
        if response.status != 200:
            try:
                raw = await response.content.read(4096)
            except (aiohttp.ClientError, OSError):
                raw = b""
            response.close()
            raise status_error(url, response.status, body_excerpt(raw, response.content_type))
        return response

    async def _read(self, response: aiohttp.ClientResponse, deadline: float, started: bool) -> bytes:
        try:
            async with timeout_at(deadline):
                return await response.content.readany()
        except asyncio.TimeoutError:
            raise self._timeout(started) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self._failure(f"the connection broke: {exc or type(exc).__name__}", started) from exc

    def _timeout(self, started: bool) -> BackendError:
        if started:
            return self._failure(f"no token for {self.endpoint.read_timeout} s (read_timeout)", started)
        return self._failure(f"no token within {self.endpoint.first_token_timeout} s (first_token_timeout)", started)

    def _failure(self, what: str, started: bool) -> BackendError:
        message = f"{self.url + self.path}: {what}"
        return BackendError(message, "incomplete_generation") if started else EndpointUnavailable(message)
