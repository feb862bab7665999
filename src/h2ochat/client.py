"""OpenAI-style clients for any h2oGPT-compatible chat server: ``AsyncClient`` and ``Client``.

    async with h2ochat.AsyncClient("http://127.0.0.1:8080") as client:
        completion = await client.chat.completions.create(model="...", messages=[...])
        print(completion.choices[0].message.content)

They speak the h2oGPT chat protocol through :class:`H2oSession` (settings,
conversation, message, delete), not ``/v1``, so they work with the servers the
``H2o`` provider works with. The answers have OpenAI's shapes (the structs of
:mod:`h2ochat.protocol.openai`), and the options map to TGI parameters as
that module says. Options left out take the parameters the server recommends
for the model (``GET /api/models``), as an OpenAI server applies its own when
a request leaves them out; ``recommended=False``, or a server that lists no
models, gives the original h2oGPT provider's defaults instead.
Without a way to learn the prompt's length over this protocol,
``usage.prompt_tokens`` is 0. Failures raise h2ochat's errors
(:class:`h2ochat.H2oChatError` and its subclasses).

``Client`` is ``AsyncClient`` run on a worker thread's event loop
(``run_in_thread``/``iterate_in_thread``): one implementation, two faces.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator
from types import TracebackType
from typing import Any, Literal, overload

from h2ochat.protocol.openai import ChatCompletion, ChatCompletionChunk, CompletionBuilder, tgi_parameters
from h2ochat.protocol.prompt import Messages
from h2ochat.providers.base import AsyncResult, iterate_in_thread, run_in_thread
from h2ochat.providers.defaults import server_model
from h2ochat.providers.session import H2oSession

__all__ = ["AsyncClient", "AsyncCompletions", "AsyncStream", "Client", "Completions", "Stream"]


class _Call:
    """One prepared request: its answer as chunks, or joined into one completion."""

    def __init__(self, result: AsyncResult, builder: CompletionBuilder) -> None:
        self.result = result
        self.builder = builder

    async def chunks(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        builder, result = self.builder, self.result
        try:
            yield builder.start()
            async for text in result:
                chunk = builder.add(text)
                if chunk is not None:
                    yield chunk
            # The prompt's length cannot be learnt over this protocol: 0.
            for chunk in builder.finish(result.info.finish_reason, 0, result.info.generated_tokens):
                yield chunk
        finally:
            await result.aclose()

    async def complete(self) -> ChatCompletion:
        async with contextlib.aclosing(self.chunks()) as chunks:
            async for _ in chunks:
                pass
        return self.builder.result()


class AsyncStream:
    """A streamed answer: ``async for chunk in stream``; leaving early: ``await stream.aclose()``."""

    def __init__(self, chunks: AsyncGenerator[ChatCompletionChunk, None]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class AsyncCompletions:
    """``client.chat.completions``: ``await create(model=..., messages=..., stream=...)``."""

    def __init__(self, session: H2oSession) -> None:
        self._session = session

    @overload
    async def create(
        self, *, messages: Messages, model: str = ..., stream: Literal[False] = ..., **options: Any
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self, *, messages: Messages, model: str = ..., stream: Literal[True], **options: Any
    ) -> AsyncStream: ...

    async def create(
        self,
        *,
        messages: Messages,
        model: str = "",
        stream: bool = False,
        stream_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> ChatCompletion | AsyncStream:
        """The answer to ``messages``: a :class:`ChatCompletion`, or with ``stream=True`` an
        :class:`AsyncStream` of chunks. Options: max_tokens, temperature, top_p, top_k, seed,
        stop, repetition_penalty (see :mod:`h2ochat.protocol.openai`)."""
        call = self.prepare(messages, model, stream_options, options)
        if stream:
            return AsyncStream(call.chunks())
        return await call.complete()

    def prepare(
        self, messages: Messages, model: str, stream_options: dict[str, Any] | None, options: dict[str, Any]
    ) -> _Call:
        """Check everything now, so that a mistake raises where the call is made (ValueError)."""
        parameters = tgi_parameters(options)
        # details: the last event must tell the finish reason and the token count.
        result = self._session.stream(messages, model or None, **parameters, details=True)
        include_usage = bool((stream_options or {}).get("include_usage"))
        builder = CompletionBuilder(server_model(model), parameters.get("stop", []), include_usage=include_usage)
        return _Call(result, builder)


class AsyncChat:
    def __init__(self, session: H2oSession) -> None:
        self.completions = AsyncCompletions(session)


class AsyncClient:
    """An OpenAI-style client of an h2oGPT-compatible server.

    ``base_url`` is the server's root (``H2OCHAT_URL`` or the historical
    h2oGPT address when left out); the other keyword arguments are
    :class:`H2oSession`'s (``proxy``, ``timeout``, ``headers``, ``max_retries``,
    ``recommended``...), or pass an open ``session`` to share it. Close the client, or use it in
    ``async with``, to delete the conversation prepared in advance.
    """

    def __init__(self, base_url: str | None = None, *, session: H2oSession | None = None, **options: Any) -> None:
        if session is not None and (base_url is not None or options):
            raise ValueError("pass either session= or base_url and session options, not both")
        self._owns_session = session is None
        self.session = session if session is not None else H2oSession(base_url, **options)
        self.chat = AsyncChat(self.session)

    async def aclose(self) -> None:
        if self._owns_session:
            await self.session.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Stream:
    """A streamed answer for synchronous code: ``for chunk in stream``; leaving early: ``stream.close()``."""

    def __init__(self, chunks: Iterator[ChatCompletionChunk]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> ChatCompletionChunk:
        return next(self._chunks)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


class Completions:
    """``client.chat.completions`` for synchronous code: ``create(model=..., messages=..., stream=...)``."""

    def __init__(self, completions: AsyncCompletions) -> None:
        self._async = completions

    @overload
    def create(
        self, *, messages: Messages, model: str = ..., stream: Literal[False] = ..., **options: Any
    ) -> ChatCompletion: ...

    @overload
    def create(self, *, messages: Messages, model: str = ..., stream: Literal[True], **options: Any) -> Stream: ...

    def create(
        self,
        *,
        messages: Messages,
        model: str = "",
        stream: bool = False,
        stream_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> ChatCompletion | Stream:
        """As :meth:`AsyncCompletions.create`, run on the worker thread's event loop."""
        call = self._async.prepare(messages, model, stream_options, options)
        if stream:
            return Stream(iterate_in_thread(call.chunks))
        return run_in_thread(call.complete)


class Chat:
    def __init__(self, completions: AsyncCompletions) -> None:
        self.completions = Completions(completions)


class Client:
    """The synchronous face of :class:`AsyncClient` (same arguments); works inside a running loop too."""

    def __init__(self, base_url: str | None = None, *, session: H2oSession | None = None, **options: Any) -> None:
        self._async = AsyncClient(base_url, session=session, **options)
        self.chat = Chat(self._async.chat.completions)

    @property
    def session(self) -> H2oSession:
        return self._async.session

    def close(self) -> None:
        run_in_thread(self._async.aclose)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
