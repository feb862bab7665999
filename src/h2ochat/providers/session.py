"""``H2oSession``: a reusable client for one chat server, of either generation of chat-ui's protocol.

A call is the steps of docs/protocol.md: in 2023's protocol accept the settings,
create a conversation, stream the answer to one message, delete the
conversation; in today's (section 13) create, post the message as a multipart
form, stream its ``MessageUpdate`` lines, delete. The conversation is deleted
whatever happens to the call, and a run of today's that the caller leaves is
stopped first, at the text the caller saw (today's server generates on after a
disconnect). Which generation the server speaks is learnt once per session with
one request (:func:`~h2ochat.providers.current.detect`), unless ``protocol=`` says.

A session keeps its connections and cookie, posts 2023's settings once per
model, and creates the next call's conversation while the current one
streams, so that a call costs one round trip before its first token. The
HTTP itself (pool, limits, retries, error answers) is :class:`Transport`'s.

Which generation parameters go under the caller's own is decided here too
(2023 only: today's protocol carries none, and passing some warns): the ones
the server recommends for the model (``GET /api/models``, asked once per
session) unless ``recommended=False``, else the original provider's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlencode

import msgspec
from yarl import URL

from h2ochat.protocol.chatui_bodies import CreatedConversation
from h2ochat.protocol.errors import (
    ConversationNotFound,
    HTTPStatusError,
    ParametersIgnoredWarning,
    ProtocolError,
    RateLimited,
    ServerError,
    TimeoutException,
    TransportError,
)
from h2ochat.protocol.prompt import Messages, format_prompt
from h2ochat.protocol.runs import GENERATION_HEADER
from h2ochat.protocol.sse import DEFAULT_MAX_EVENT_SIZE
from h2ochat.protocol.tgi import DEFAULT_PARAMETERS, message_request, settings_form
from h2ochat.providers.answers import read_current, read_tgi
from h2ochat.providers.base import AsyncResult, CallInfo
from h2ochat.providers.conversation import Conversation
from h2ochat.providers.current import GENERATIONS, CurrentSteps, Generation, detect
from h2ochat.providers.defaults import server_model, server_url
from h2ochat.providers.lifecycle import Conversations, decode_json
from h2ochat.providers.options import UNSET, Proxy, RetryPolicy, Timeout, proxy_from_env
from h2ochat.providers.reattach import ResumableStream
from h2ochat.providers.transport import ByteStream, Transport

__all__ = ["H2oSession", "Prepared"]

log = logging.getLogger("h2ochat")
# Failures that may pass: the models list is asked again on the next call. Any other error
# answer means the server does not list its models (chat-ui of 2023, h2oGPT), once and for all.
_PASSING = (TransportError, TimeoutException, RateLimited, ServerError)


class Prepared(NamedTuple):
    """A checked call: the model, the prompt, and the caller's own generation parameters."""

    model: str
    inputs: str
    parameters: dict[str, Any]
    search: str | None = None  # the question to search the web for first (web_search=True)


REATTACH_PATIENCE = 60.0  # seconds to keep reattaching to a broken answer when there is no read limit


def _root(url: str | None) -> str:
    root = server_url(url).rstrip("/")
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
    - ``recommended``: put the caller's generation parameters over those the
      server recommends for the model (default True), read once from its
      models list; a server that lists none gets the original provider's
      defaults, as it does with ``recommended=False``.
    - ``protocol``: ``"2023"`` or ``"current"`` (today's chat-ui) to speak that
      generation of the protocol; by default (``None`` or ``"auto"``) the first
      call asks the server once (``GET /api/v2/models``).
    - ``reattach``: when the connection of an answer an h2ochat server keeps (it
      names its run) breaks, get the rest of it from where it broke (default
      True), trying for up to the read limit (or a minute without one).
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
        recommended: bool = True,
        protocol: str | None = None,
        reattach: bool = True,
    ) -> None:
        self.root = _root(url)
        if protocol not in (None, "auto", *GENERATIONS):
            raise ValueError(f"protocol must be '2023', 'current' or 'auto', got {protocol!r}")
        self.proxy = Proxy(proxy if proxy is not None else proxy_from_env(URL(self.root)))
        self.timeout = Timeout() if timeout is UNSET else Timeout.of(timeout)
        self.max_event_size = max_event_size
        self.prefetch = prefetch
        self.recommended = recommended
        self.reattach = reattach
        self._http = Transport(
            self.root,
            timeout=self.timeout,
            proxy=self.proxy,
            retry=RetryPolicy(max_retries),
            # chat-ui's server checks that form posts come from its own pages: by their Referer in
            # 2023, by their Origin today.
            headers={"Referer": self.root + "/", "Origin": str(URL(self.root).origin()), **(headers or {})},
            cookies=dict(cookies or {}),
            max_connections=max_connections,
        )
        self._settings: dict[str, asyncio.Task[None]] = {}
        self._models: asyncio.Task[list[dict[str, Any]]] | None = None
        self._current = CurrentSteps(self._http)
        self._conversations = Conversations(self._http, self._current, prefetch=prefetch)
        self._generation: Generation | None = None
        self._detecting: asyncio.Task[Generation] | None = None
        self._listed: list[dict[str, Any]] | None = None  # the models the probe brought
        self._closed = False
        forced = next((generation for generation in GENERATIONS if generation == protocol), None)
        if forced is not None:
            self._generation = self._conversations.generation = forced

    async def __aenter__(self) -> H2oSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Delete prefetched conversations, finish pending deletes, close the connections."""
        if self._closed:
            return
        self._closed = True
        for task in [*self._settings.values(), *([self._models] if self._models else [])]:
            task.cancel()
        try:
            await self._conversations.aclose()
        finally:  # a cancellation must not leave the connections open either
            await self._http.close()

    def stream(
        self, messages: Messages, model: str | None = None, *, web_search: bool = False, **parameters: Any
    ) -> AsyncResult:
        """Stream the answer to ``messages``; keyword arguments are generation parameters. ``web_search``:
        the server searches the web for the last message first (its sources: the result's ``sources``)."""
        request = self.prepare(messages, model, {**parameters, "web_search": web_search})
        return AsyncResult(lambda info: self.call(info, request))

    @staticmethod
    def prepare(messages: Messages, model: str | None, parameters: dict[str, Any]) -> Prepared:
        """Check the input now, so that mistakes raise where the call is made."""
        parameters = dict(parameters)
        search = None
        if parameters.pop("web_search", False):
            search = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), None)
            if not search:
                raise ValueError("web_search needs a user message to search the web for")
        inputs = format_prompt(messages)
        try:
            msgspec.json.encode(parameters)
        except TypeError as exc:
            raise ValueError(f"generation parameters must be JSON values: {exc}") from None
        return Prepared(server_model(model), inputs, parameters, search)

    async def ask(self, messages: Messages, model: str | None = None, **parameters: Any) -> str:
        """The whole answer to ``messages`` as one string."""
        return await self.stream(messages, model, **parameters).text()

    async def models(self) -> list[dict[str, Any]]:
        """The models the server offers (``GET /api/models``: h2ochat's servers, chat-ui's since 2024;
        ``GET /api/v2/models`` on today's chat-ui).

        Asked once per session and shared by concurrent callers; a failure that may pass
        (the network, 429, 5xx) is asked again by the next caller, any other is kept.
        """
        task = self._models
        if task is None or (task.done() and (task.cancelled() or isinstance(task.exception(), _PASSING))):
            task = self._models = asyncio.ensure_future(self._fetch_models())
        return await asyncio.shield(task)

    async def conversation(
        self, model: str | None = None, system: str | None = None, *, keep: bool = False
    ) -> Conversation:
        """A conversation kept on the server, turn after turn (today's chat-ui protocol only):
        ``async with await session.conversation(model) as chat: await chat.send("Hi").text()``."""
        if await self.generation() != "current":
            raise ValueError(
                f"{self.root} speaks the chat protocol of 2023: conversations kept turn after turn need "
                "today's (protocol='current'); session.stream(messages) sends the whole chat each call"
            )
        return Conversation(
            self._conversations, server_model(model), system, max_line_size=self.max_event_size, keep=keep
        )

    async def generation(self) -> Generation:
        """The generation of the protocol the server speaks: ``"2023"`` or ``"current"``.

        Asked once per session (shared by concurrent callers), unless ``protocol=`` said;
        a failure is raised, and the next caller asks again.
        """
        if self._generation is not None:
            return self._generation
        task = self._detecting
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._detecting = asyncio.ensure_future(self._detect())
        return await asyncio.shield(task)

    async def _detect(self) -> Generation:
        generation, self._listed = await detect(self._http)
        self._generation = self._conversations.generation = generation
        log.debug("%s speaks the %s chat protocol", self.root, generation)
        return generation

    async def _fetch_models(self) -> list[dict[str, Any]]:
        if await self.generation() == "current":
            listed, self._listed = self._listed, None
            return listed if listed is not None else await self._current.models()
        models = decode_json(await self._http.request("models", "GET", "/api/models"))
        if not isinstance(models, list):
            raise ProtocolError(f"models step: GET {self.root}/api/models did not answer a list of models")
        return [model for model in models if isinstance(model, dict)]

    async def recommended_parameters(self, model: str | None = None) -> dict[str, Any] | None:
        """The generation parameters the server recommends for ``model``, from its models list.

        None when it names none: a server that does not list its models, or a model it
        lists without them. A failure that may pass (the network, 429, 5xx) is raised.
        """
        try:
            models = await self.models()
        except (HTTPStatusError, ProtocolError) as exc:
            if isinstance(exc, _PASSING):
                raise
            return None
        model = server_model(model)
        listed = next((entry for entry in models if entry.get("id") == model), {})
        parameters = listed.get("parameters")
        if not isinstance(parameters, dict):
            return None
        return {name: value for name, value in parameters.items() if value is not None}

    async def _defaults(self, model: str) -> Mapping[str, Any]:
        """What the caller's parameters go over: the server's recommended ones, or the original provider's.

        Not merged with the provider's: a server's recommendation is the whole of it, and what
        it leaves out is the server's own default (the 1.2 repetition penalty of the original
        provider is exactly what made the embedded model answer nonsense).
        """
        listed = await self.recommended_parameters(model) if self.recommended else None
        return DEFAULT_PARAMETERS if listed is None else listed

    # The steps ------------------------------------------------------------------------------

    async def call(self, info: CallInfo, request: Prepared) -> AsyncGenerator[str, None]:
        """One call, from 2023's settings to the delete; ``info`` is filled in as it goes.

        The answer is read by :mod:`h2ochat.providers.answers`, in the generation the
        server speaks; the transport applies the time limits.
        """
        if self._closed:
            raise RuntimeError("this H2oSession is closed; create a new one")
        model = request.model
        current = await self.generation() == "current"
        generation_id = str(uuid.uuid4()) if current else None
        send: Callable[[CreatedConversation], Awaitable[ByteStream]]
        if generation_id is not None:
            _warn_ignored(request.parameters)
            send = functools.partial(self._send_current, request.inputs, generation_id, request.search is not None)
        else:
            await self._accept_settings(model)
        created, prefetched = await self._conversations.take(model)
        info.conversation_id = created.id
        if generation_id is None:
            # After the settings, whose answer brings the session's cookie; cached after the first call.
            search_id = "" if request.search is None else await self._search_2023(created.id, request.search, info)
            body = message_request(
                request.inputs, request.parameters, await self._defaults(model), web_search_id=search_id
            )
            send = functools.partial(self._send_2023, body)
        texts: list[str] = []
        posted = False
        try:
            posted_stream = await self._post_message(info, model, send, prefetched, created)
            chunks = self._resumable(info, posted_stream, "current" if current else "2023")
            posted = True
            if current:
                tokens = read_current(chunks, info, texts, self.max_event_size)
            else:
                tokens = read_tgi(chunks, info, texts, self.max_event_size)
            async with contextlib.aclosing(tokens):
                async for batch in tokens:  # a read's texts: one step of the reader per read, not per token
                    for text in batch:
                        texts.append(text)
                        yield text
        finally:
            # Shielded: a second cancellation (a timeout around the caller, the loop
            # shutting down) must not abandon the delete; aclose() waits for it.
            conversation = info.conversation_id or created.id  # the message step may have replaced it
            stop = generation_id if posted and not info.done else None
            ending = self._conversations.end(conversation, complete=info.done, stop=stop, seen="".join(texts))
            await asyncio.shield(self._conversations.spawn(ending))

    def _resumable(self, info: CallInfo, chunks: ByteStream, generation: Generation) -> ByteStream | ResumableStream:
        """The answer's stream, reattached when it breaks, where the server keeps the answer's run."""
        run_id = chunks.headers.get(GENERATION_HEADER)
        if run_id is None or not self.reattach:
            return chunks
        path = f"/conversation/{info.conversation_id}/stream"

        async def reopen(after: int) -> ByteStream:
            query = urlencode({"generationId": run_id, "fromSeq": after})
            return await self._http.stream(f"{path}?{query}", None, step="reattach")

        patience = self._http.timeout.read or REATTACH_PATIENCE
        return ResumableStream(chunks, reopen, generation, patience)

    async def _accept_settings(self, model: str) -> None:
        """Step 1, once per session and model, shared by concurrent calls."""
        task = self._settings.get(model)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = asyncio.ensure_future(self._post_settings(model))
            self._settings[model] = task
        await asyncio.shield(task)

    async def _post_settings(self, model: str) -> None:
        # 303 (See Other) and 200 with a JSON redirect object both mean accepted.
        await self._http.request("settings", "POST", "/settings", data=settings_form(model), ok=(200, 303))

    async def _send_2023(self, body: bytes, created: CreatedConversation) -> ByteStream:
        return await self._http.stream(f"/conversation/{created.id}", body)

    async def _send_current(
        self, inputs: str, generation_id: str, web_search: bool, created: CreatedConversation
    ) -> ByteStream:
        # CurrentSteps.create always finds the root: the first turn's parent.
        root = created.root_message_id or ""
        return await self._current.post(created.id, inputs, root, generation_id, web_search=web_search)

    async def _search_2023(self, conversation: str, query: str, info: CallInfo) -> str:
        """chat-ui 2023's search step: ``GET web-search?prompt=``, its progress read to the ``result``;
        the search's id, for the message's ``web_search_id`` (sources into ``info``)."""
        raw = await self._http.request(
            "web search", "GET", f"/conversation/{conversation}/web-search?{urlencode({'prompt': query})}"
        )
        search_id = ""
        for line in raw.splitlines():
            event = decode_json(line) if line.strip() else None
            if isinstance(event, dict) and event.get("type") == "sources":
                info.sources = [s for s in event.get("sources") or [] if isinstance(s, dict)]
            elif isinstance(event, dict) and event.get("type") == "result":
                search_id = str(event.get("id", ""))
        if not search_id:
            raise ProtocolError(f"web search step: {self.root} ended the search without a result id")
        return search_id

    async def _post_message(
        self,
        info: CallInfo,
        model: str,
        send: Callable[[CreatedConversation], Awaitable[ByteStream]],
        prefetched: bool,
        created: CreatedConversation,
    ) -> ByteStream:
        """The message's request, to ``created`` (replaced if a prefetched one vanished)."""
        try:
            chunks = await send(created)
        except ConversationNotFound:
            if not prefetched:
                raise
            # A conversation made in advance can vanish (a server restart); the
            # message was refused, so sending it again to a fresh one is safe.
            created = await self._conversations.new(model)
            info.conversation_id = created.id
            chunks = await send(created)
        # Only now, with this call's own requests sent, so that making the next
        # call's conversation never competes with them for a connection.
        self._conversations.make_spare(model)
        return chunks


def _warn_ignored(parameters: Mapping[str, Any]) -> None:
    # ``details`` asks for information, which today's stream gives anyway (a finish reason).
    ignored = sorted(name for name in parameters if name != "details")
    if ignored:
        warnings.warn(
            f"generation parameters not sent: {', '.join(ignored)}. Today's chat-ui protocol has no place "
            "for them (the server's configuration decides); a server that also speaks 2023's takes them "
            "with protocol='2023'",
            ParametersIgnoredWarning,
            stacklevel=2,
        )
