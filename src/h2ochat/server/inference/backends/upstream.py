"""What the two upstream backends (tgi, openai) share: the request, the stream, the failures.

A subclass says where to post, what to send, and how to turn the answer's
bytes into tokens (a :class:`TokenDecoder`); this class does the rest. The
HTTP itself (pool, time limits, aiohttp's errors) is the client's
:class:`~h2ochat.providers.transport.Transport`, whose errors are mapped here.

Failures before the first token raise :class:`EndpointUnavailable` when
another endpoint could do better (connection refused or broken, a timeout,
5xx, 429), so that the model's runtime can try one; a refusal of the request
itself (400, 422, 401...) raises a plain :class:`BackendError`. After the
first token, a broken, stalled or cut stream is ``incomplete_generation``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from h2ochat.protocol.errors import (
    ConnectError,
    ConnectTimeout,
    FirstTokenTimeout,
    H2oChatError,
    HTTPStatusError,
    IncompleteStream,
    ReadTimeout,
)
from h2ochat.providers.options import Timeout
from h2ochat.providers.transport import ByteStream, Transport
from h2ochat.server.config import UpstreamEndpoint
from h2ochat.server.inference.backends import BackendError, EndpointUnavailable, GeneratedToken, GenerationRequest

__all__ = ["TokenDecoder", "UpstreamBackend", "status_error"]

# Upstream statuses as TGI error types; any other status is "generation".
_STATUS_TYPES = {400: "validation", 422: "validation", 429: "overloaded", 503: "overloaded"}
# What a client is told of an upstream's failure, by error type; the details go to the log.
_PUBLIC = {
    "validation": "The model's inference server refused the request as invalid",
    "overloaded": "The model's inference server is busy; try again shortly",
    "incomplete_generation": "The model's inference server stopped before the answer was complete",
    "generation": "The model's inference server could not answer",
}
# The endpoint setting behind each time limit, named in the error so the fix is obvious.
_SETTINGS: dict[type[H2oChatError], str] = {
    FirstTokenTimeout: "first_token_timeout",
    ReadTimeout: "read_timeout",
    ConnectTimeout: "connect_timeout",
}


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
    """Streams tokens from an inference engine over h2ochat's HTTP transport, one per endpoint."""

    path = ""  # where to post, after the endpoint's url

    def __init__(self, endpoint: UpstreamEndpoint) -> None:
        self.endpoint = endpoint
        self.url = endpoint.url.rstrip("/")
        self.max_concurrency: int | None = endpoint.max_concurrency
        self._http: Transport | None = None

    def headers(self) -> dict[str, str]:
        """Headers for every request (an API key); called once, in ``start``."""
        return {}

    def body(self, request: GenerationRequest) -> bytes:
        raise NotImplementedError

    def decoder(self) -> TokenDecoder:
        raise NotImplementedError

    async def start(self) -> None:
        endpoint = self.endpoint
        timeout = Timeout(
            connect=endpoint.connect_timeout, first_token=endpoint.first_token_timeout, read=endpoint.read_timeout
        )
        # No pool limit (the default): the model's queue (max_concurrency) is what limits requests.
        # No retries either: another endpoint of the model is the better second try.
        self._http = Transport(self.url, timeout=timeout, headers=self.headers())

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GeneratedToken]:
        """Post the request and yield its tokens; closing early closes the upstream connection,
        which is how TGI, vLLM and llama.cpp's server learn to stop generating."""
        try:
            async for token in self._tokens(request):
                yield token
        except BackendError as exc:
            if exc.public is None:
                exc.public = _PUBLIC.get(exc.error_type, _PUBLIC["generation"])
            raise

    async def _tokens(self, request: GenerationRequest) -> AsyncIterator[GeneratedToken]:
        if self._http is None:
            raise BackendError(f"the endpoint {self.url} is not started")
        try:
            chunks = await self._http.stream(self.path, self.body(request), step="generate")
        except H2oChatError as exc:
            raise self._failure(exc, started=False) from exc
        decoder = self.decoder()
        started = False
        async with chunks:
            while chunk := await self._next(chunks, started):
                for token in decoder.feed(chunk):
                    if not started:
                        started = True
                        chunks.got_token()
                    yield token
                    if token.finish_reason is not None:
                        return
        ended = IncompleteStream(f"the stream from {self.url + self.path} ended before its last token")
        raise self._failure(ended, started)

    async def _next(self, chunks: ByteStream, started: bool) -> bytes:
        """The next chunk, or b"" at the end of the body."""
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return b""
        except H2oChatError as exc:
            raise self._failure(exc, started) from exc

    def _failure(self, error: H2oChatError, started: bool) -> BackendError:
        """Before the first token another endpoint may do better; after it the answer is incomplete."""
        if isinstance(error, HTTPStatusError):  # only ever before the first token
            return status_error(self.url + self.path, error.status, error.body)
        setting = _SETTINGS.get(type(error))
        message = f"{error} (the endpoint's {setting})" if setting else str(error)
        if isinstance(error, (ConnectError, ConnectTimeout)):
            message = f"could not reach the endpoint: {message}"
        return BackendError(message, "incomplete_generation") if started else EndpointUnavailable(message)
