"""The h2oGPT chat client: ``H2o`` (one call, one HTTP session) and ``H2oSession`` (reused).

A call is the four steps of PROTOCOL.md section 1: accept the settings,
create a conversation, stream the answer to one message, delete the
conversation.  The conversation is deleted whatever happens to the call.

A reused ``H2oSession`` keeps its connections and cookie, posts the settings
once per model and creates the next call's conversation while the current
one streams, so that a call costs one round trip before its first token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import Any, NoReturn, TypeVar

import aiohttp
import msgspec
from yarl import URL

from h2ochat.protocol.errors import (
    ConnectError,
    ConnectTimeout,
    ConversationNotFound,
    FirstTokenTimeout,
    H2oChatError,
    IncompleteStream,
    ProtocolError,
    ProxyError,
    RateLimited,
    ReadError,
    ReadTimeout,
    body_excerpt,
    error_for_status,
)
from h2ochat.protocol.prompt import Messages, format_prompt
from h2ochat.protocol.sse import DEFAULT_MAX_EVENT_SIZE
from h2ochat.protocol.tgi import StreamEvent, TGIStreamDecoder, message_request, settings_form
from h2ochat.providers.base import AsyncGeneratorProvider, AsyncResult, CallInfo
from h2ochat.providers.transport import (
    UNSET,
    Proxy,
    RetryPolicy,
    Timeout,
    map_errors,
    proxy_from_env,
    redact,
    timeout_at,
)

__all__ = ["DEFAULT_MODEL", "DEFAULT_URL", "DeleteFailedWarning", "H2o", "H2oSession", "TRANSPORT_OPTIONS"]

log = logging.getLogger("h2ochat")
T = TypeVar("T")

DEFAULT_URL = "https://gpt-gm.h2o.ai"
DEFAULT_MODEL = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"

# Keyword arguments that configure the call and are never sent as generation parameters.
TRANSPORT_OPTIONS = frozenset(
    {"url", "timeout", "stream", "headers", "cookies", "max_retries", "session", "max_event_size"}
)
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_JSON = {"Content-Type": "application/json"}


class DeleteFailedWarning(UserWarning):
    """A conversation could not be deleted after its answer was complete."""


def default_url() -> str:
    """The server root: ``H2OCHAT_URL`` if set, else the historical h2oGPT address."""
    return os.environ.get("H2OCHAT_URL") or DEFAULT_URL


def _root(url: str | None) -> str:
    root = (url or default_url()).rstrip("/")
    parsed = URL(root)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"url must be an http:// or https:// server root, got {root!r}")
    return root


class H2oSession:
    """A reusable client for one h2oGPT-compatible server.

    Use it as ``async with H2oSession(url) as session:`` and call
    ``session.stream(messages)`` as often as needed.  Options:

    - ``proxy``: ``http://``, ``https://``, ``socks4://`` or ``socks5://`` URL,
      credentials allowed; by default the proxy environment variables apply.
    - ``timeout``: a :class:`Timeout`, a number of seconds for every phase, or None.
    - ``headers``, ``cookies``: sent with every request.
    - ``max_retries``: retries of the settings, conversation and delete steps
      (and of a message that never reached the server).
    - ``prefetch``: create the next conversation in advance (default True); it
      is deleted when the session closes.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        proxy: str | None = None,
        timeout: Timeout | float | None = UNSET,
        headers: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        max_retries: int = 2,
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
        max_connections: int = 100,
        prefetch: bool = True,
    ) -> None:
        self.root = _root(url)
        self.proxy = Proxy(proxy if proxy is not None else proxy_from_env(URL(self.root)))
        self.timeout = Timeout() if timeout is UNSET else Timeout.of(timeout)
        self.retry = RetryPolicy(max_retries)
        self.max_event_size = max_event_size
        self.prefetch = prefetch
        self._headers = {"Referer": self.root + "/", **(headers or {})}
        self._cookies = dict(cookies or {})
        self._max_connections = max_connections
        self._http: aiohttp.ClientSession | None = None
        self._settings: dict[str, asyncio.Task[None]] = {}
        self._spares: dict[str, asyncio.Task[str]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    async def __aenter__(self) -> H2oSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Delete prefetched conversations, finish pending deletes, close the connections."""
        if self._closed:
            return
        self._closed = True
        for spare in self._spares.values():
            self._discard(spare)
        self._spares.clear()
        for task in self._settings.values():
            task.cancel()
        # Conversation creations and deletes still running; a finished creation
        # schedules its delete before gather() returns, hence the loop. Shielded: a
        # cancellation here (a second one, or a timeout around the caller) must not
        # cancel the deletes nor leave the connections open; it is raised afterwards.
        cancelled: asyncio.CancelledError | None = None
        while self._background:
            try:
                await asyncio.shield(asyncio.gather(*self._background, return_exceptions=True))
            except asyncio.CancelledError as exc:
                cancelled = exc
        if self._http is not None:
            await self._http.close()
        if cancelled is not None:
            raise cancelled

    def stream(self, messages: Messages, model: str | None = None, **parameters: Any) -> AsyncResult:
        """Stream the answer to ``messages``; keyword arguments are generation parameters."""
        model, body = self.prepare(messages, model, parameters)
        return AsyncResult(lambda info: self.call(info, model, body))

    @staticmethod
    def prepare(messages: Messages, model: str | None, parameters: dict[str, Any]) -> tuple[str, bytes]:
        """Check the input now, so that mistakes raise where the call is made."""
        try:
            body = message_request(format_prompt(messages), parameters)
        except TypeError as exc:
            raise ValueError(f"generation parameters must be JSON values: {exc}") from None
        return model or DEFAULT_MODEL, body

    async def ask(self, messages: Messages, model: str | None = None, **parameters: Any) -> str:
        """The whole answer to ``messages`` as one string."""
        return await self.stream(messages, model, **parameters).text()

    async def models(self) -> list[dict[str, Any]]:
        """The models the server offers (``GET /api/models``, an h2ochat server extension)."""
        _, body = await self._request("request", "GET", "/api/models")
        try:
            models = msgspec.json.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            models = None
        if not isinstance(models, list):
            raise ProtocolError(f"GET {self.root}/api/models did not answer a list of models")
        return models

    # The four steps -------------------------------------------------------------------------

    async def call(self, info: CallInfo, model: str, body: bytes) -> AsyncGenerator[str, None]:
        """One call, from settings to delete; ``info`` is filled in as it goes."""
        if self._closed:
            raise RuntimeError("this H2oSession is closed; create a new one")
        await self._accept_settings(model)
        conversation, prefetched = await self._take_conversation(model)
        info.conversation_id = conversation
        try:
            started = asyncio.get_running_loop().time()
            try:
                response = await self._post_message(conversation, body, started)
            except ConversationNotFound:
                if not prefetched:
                    raise
                # A conversation made in advance can vanish (a server restart); the
                # message was refused, so sending it again to a fresh one is safe.
                conversation = await self._own(self._spawn(self._create_conversation(model)))
                info.conversation_id = conversation
                response = await self._post_message(conversation, body, started)
            try:
                async for token in self._read_stream(response, info, started):
                    yield token
            finally:
                response.release()
        finally:
            # Shielded: a second cancellation (a timeout around the caller, the loop
            # shutting down) must not abandon the delete; aclose() waits for it.
            await asyncio.shield(self._spawn(self._delete(conversation, complete=info.done)))

    async def _accept_settings(self, model: str) -> None:
        """Step 1, once per session and model, shared by concurrent calls."""
        task = self._settings.get(model)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.ensure_future(self._post_settings(model))
            self._settings[model] = task
        await asyncio.shield(task)

    async def _post_settings(self, model: str) -> None:
        # 303 (See Other) and 200 with a JSON redirect object both mean accepted.
        await self._request("settings", "POST", "/settings", data=settings_form(model), ok=(200, 303))

    async def _take_conversation(self, model: str) -> tuple[str, bool]:
        """Step 2: the conversation made in advance if there is one, else a new one."""
        spare = self._spares.pop(model, None)
        if self.prefetch:
            self._spares[model] = self._spawn(self._create_conversation(model))
        if spare is not None:
            try:
                return await self._own(spare), True
            except H2oChatError as exc:
                log.debug("the conversation made in advance failed (%s); creating one now", exc)
        return await self._own(self._spawn(self._create_conversation(model))), False

    async def _own(self, creation: asyncio.Task[str]) -> str:
        """Await a conversation's creation; if the caller is cancelled meanwhile,
        the conversation is deleted once created instead of being leaked."""
        try:
            return await asyncio.shield(creation)
        except asyncio.CancelledError:
            self._discard(creation)
            raise

    def _discard(self, creation: asyncio.Task[str]) -> None:
        """Delete the conversation ``creation`` makes, now or once it is made."""
        if not creation.done():
            creation.add_done_callback(self._discard)
        elif not creation.cancelled() and creation.exception() is None:
            self._spawn(self._delete(creation.result(), complete=False))

    def _spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _create_conversation(self, model: str) -> str:
        _, body = await self._request("conversation", "POST", "/conversation", content=_encode({"model": model}))
        try:
            conversation = msgspec.json.decode(body)["conversationId"]
        except (msgspec.DecodeError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
            # msgspec raises UnicodeDecodeError for invalid UTF-8 inside a string, and
            # RecursionError for absurdly nested JSON: both are just a bad answer here.
            conversation = None
        if not isinstance(conversation, str) or not conversation:
            raise ProtocolError(
                f"conversation step: {self.root}/conversation answered without a conversationId: {body[:120]!r}"
            )
        return conversation

    async def _post_message(self, conversation: str, body: bytes, started: float) -> aiohttp.ClientResponse:
        """Step 3's request. Retried only when the connection was never made."""
        url = f"{self.root}/conversation/{conversation}"
        http = self._client()
        limit = self.timeout.first_token
        deadline = None if limit is None else started + limit
        for attempt in range(self.retry.max_retries + 1):
            try:
                async with timeout_at(deadline):
                    with map_errors("message", url, self.proxy, phase="connect"):
                        response = await http.post(
                            url, data=body, headers=_JSON, proxy=self.proxy.http_proxy, timeout=self._stream_limits()
                        )
                break
            except (ConnectError, ConnectTimeout) as exc:
                # The connection was never made, so the message never reached the server.
                if isinstance(exc, ProxyError) or attempt == self.retry.max_retries:
                    raise
            except H2oChatError:
                raise
            except TimeoutError:
                raise self._first_token_timeout(url, limit) from None
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

    @staticmethod
    def _first_token_timeout(url: str, limit: float | None) -> FirstTokenTimeout:
        return FirstTokenTimeout(f"message step: no token from {url} within the first-token limit ({limit} s)")

    async def _read_stream(
        self, response: aiohttp.ClientResponse, info: CallInfo, started: float
    ) -> AsyncIterator[str]:
        """Step 3's answer: token texts until the event that carries ``generated_text``.

        Until the first token the deadline is fixed (keep-alives do not move
        it); afterwards every arrival, keep-alives included, restarts the
        between-events limit.
        """
        decoder = TGIStreamDecoder(self.max_event_size)
        loop = asyncio.get_running_loop()
        first_limit, read_limit = self.timeout.first_token, self.timeout.read
        deadline = None if first_limit is None else started + first_limit
        waiting_first = True
        content = response.content
        texts: list[str] = []
        url = str(response.url)
        while True:
            try:
                async with timeout_at(deadline):
                    with map_errors("message", url, self.proxy):
                        chunk = await content.readany()
            except H2oChatError as exc:
                self._fail(exc, texts)
            except TimeoutError as exc:
                error = (
                    self._first_token_timeout(url, first_limit)
                    if waiting_first
                    else ReadTimeout(f"message step: no event from {url} within the read limit ({read_limit} s)")
                )
                self._fail(error, texts, exc)
            if not chunk:
                self._fail(
                    IncompleteStream(
                        f"message step: the stream from {url} ended before its final event "
                        f"({len(texts)} tokens received); the server may have stopped or crashed"
                    ),
                    texts,
                )
            try:
                for event in decoder.decode(chunk):
                    if event.token is not None:
                        waiting_first = False
                        info.generated_tokens += 1
                        if not event.token.special:
                            texts.append(event.token.text)
                            yield event.token.text
                    if event.generated_text is not None:
                        self._finish(info, event)
                        return
            except H2oChatError as exc:
                self._fail(exc, texts)
            if not waiting_first:
                deadline = None if read_limit is None else loop.time() + read_limit

    @staticmethod
    def _finish(info: CallInfo, event: StreamEvent) -> None:
        info.generated_text = event.generated_text
        if event.details is not None:
            info.finish_reason = event.details.finish_reason
            info.generated_tokens = event.details.generated_tokens
            info.seed = event.details.seed
        info.done = True

    @staticmethod
    def _fail(exc: H2oChatError, texts: list[str], cause: BaseException | None = None) -> NoReturn:
        exc.partial_text = "".join(texts)
        exc.step = exc.step or "message"
        raise exc from (cause or exc.__cause__)

    async def _delete(self, conversation: str, *, complete: bool) -> None:
        """Step 4. After a complete answer a failure is a warning, so the answer is kept."""
        try:
            await self._request("delete", "DELETE", f"/conversation/{conversation}")
        except ConversationNotFound:
            pass  # already gone: the goal of the step is reached
        except H2oChatError as exc:
            if complete:
                warnings.warn(
                    f"the answer is complete, but its conversation {conversation} could not be deleted: {exc}",
                    DeleteFailedWarning,
                    stacklevel=2,
                )
            else:
                log.warning("could not delete conversation %s: %s", conversation, exc)

    # HTTP ---------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            # unsafe=True keeps cookies from servers addressed by IP (127.0.0.1),
            # which aiohttp's default jar silently drops.
            jar = aiohttp.CookieJar(unsafe=True)
            if self._cookies:
                jar.update_cookies(self._cookies, URL(self.root))
            self._http = aiohttp.ClientSession(
                connector=self.proxy.connector(limit=self._max_connections),
                cookie_jar=jar,
                headers={"User-Agent": _user_agent(), **self._headers},
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._handshake_limit(), sock_connect=self.timeout.connect
                ),
                trust_env=False,  # proxies from the environment are resolved by proxy_from_env
            )
        return self._http

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

    def _step_limits(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None,
            connect=self._handshake_limit(),
            sock_connect=self.timeout.connect,
            sock_read=self.timeout.read,
        )

    def _stream_limits(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None, connect=self._handshake_limit(), sock_connect=self.timeout.connect, sock_read=None
        )

    async def _request(
        self,
        step: str,
        method: str,
        path: str,
        *,
        data: dict[str, str] | None = None,
        content: bytes | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, bytes]:
        """One non-streaming step, retried on connection failures, 429 and 502/503/504."""
        url = self.root + path
        http = self._client()
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
                        timeout=self._step_limits(),
                    ) as response:
                        body = await response.read()
                if response.status in ok:
                    log.debug("%s %s -> %s", method, redact(url), response.status)
                    return response.status, body
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


def _encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


def _user_agent() -> str:
    from h2ochat import __version__

    return f"h2ochat/{__version__}"


class H2o(AsyncGeneratorProvider):
    """The h2oGPT chat provider: ``H2o.create_async_generator(model, messages)`` streams an answer.

    Keyword arguments are generation parameters (``temperature=0.1``,
    ``max_new_tokens=64``, ``stop=[...]``, ``seed=1``, ``details=True``), except
    the transport options: ``url``, ``timeout``, ``headers``, ``cookies``,
    ``max_retries``, ``max_event_size``, ``stream`` and ``session`` (an open
    :class:`H2oSession` to reuse instead of a new one per call).
    """

    url = DEFAULT_URL
    model = DEFAULT_MODEL
    working = True
    supports_stream = True
    supports_message_history = True

    @classmethod
    def create_async_generator(
        cls, model: str, messages: Messages, proxy: str | None = None, **kwargs: Any
    ) -> AsyncResult:
        options = {name: kwargs.pop(name) for name in TRANSPORT_OPTIONS & kwargs.keys()}
        options.pop("stream", None)  # the protocol always streams; the sync helper reads it
        session: H2oSession | None = options.pop("session", None)
        if session is not None:
            if options or proxy is not None:
                raise ValueError(
                    f"{', '.join(sorted(options)) or 'proxy'} cannot be combined with session=: "
                    "set it when creating the H2oSession"
                )
            return session.stream(messages, model, **kwargs)
        one_shot = H2oSession(proxy=proxy, prefetch=False, **options)
        model, body = one_shot.prepare(messages, model, kwargs)
        return AsyncResult(lambda info: _one_shot(one_shot, info, model, body))


async def _one_shot(session: H2oSession, info: CallInfo, model: str, body: bytes) -> AsyncIterator[str]:
    """One call on its own session, closed afterwards whatever happens."""
    try:
        async with contextlib.aclosing(session.call(info, model, body)) as tokens:
            async for token in tokens:
                yield token
    finally:
        await session.aclose()
