"""The provider base class, the streamed result object and the synchronous bridge.

Every provider implements one async method, ``create_async_generator``; the
joined (``create_async``) and synchronous (``create_completion``) forms are
derived from it here, so no provider writes its logic twice.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from h2ochat.protocol.prompt import Messages, check_messages

__all__ = ["AsyncGeneratorProvider", "AsyncResult", "CallInfo", "iterate_in_thread", "run_in_thread"]

T = TypeVar("T")


@dataclass
class CallInfo:
    """What is known about a call besides its text; filled in as the stream goes.

    ``title`` and ``reasoning`` (the model's thinking, kept apart from the answer)
    come from servers of today's chat-ui only; ``seed`` from 2023's with ``details``.
    """

    conversation_id: str | None = None
    finish_reason: str | None = None
    generated_tokens: int = 0
    seed: int | None = None
    generated_text: str | None = None
    done: bool = False
    title: str | None = None
    reasoning: str = ""
    sources: list[dict[str, str]] = field(default_factory=list)  # a web search's: {link, title, hostname}


class AsyncResult:
    """A streamed answer: iterate it once for its tokens (``str``).

    It serves both ``async for t in result`` and ``async for t in await result``,
    because the original provider's documentation shows the second form.
    ``result.info`` tells the conversation id, the finish reason and the token
    count (the finish reason comes with ``details=True``).  Leaving the loop
    early is safe: the call is cleaned up when the result is closed or dropped.
    """

    def __init__(self, make: Callable[[CallInfo], AsyncIterator[str]]) -> None:
        self.info = CallInfo()
        self._tokens = make(self.info)

    def __aiter__(self) -> AsyncResult:
        return self

    async def __anext__(self) -> str:
        return await self._tokens.__anext__()

    def __await__(self) -> Generator[Any, None, AsyncResult]:
        return self
        yield  # makes this a generator: ``await result`` gives the result itself

    async def aclose(self) -> None:
        """Stop the call now; its conversation is deleted before this returns."""
        aclose = getattr(self._tokens, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> AsyncResult:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def text(self) -> str:
        """Consume the rest of the stream and return it joined."""
        return "".join([token async for token in self])

    @property
    def conversation_id(self) -> str | None:
        return self.info.conversation_id

    @property
    def finish_reason(self) -> str | None:
        return self.info.finish_reason

    @property
    def generated_tokens(self) -> int:
        return self.info.generated_tokens

    @property
    def sources(self) -> list[dict[str, str]]:
        """The web pages the answer was grounded in (``web_search=True``): ``{link, title, hostname}``."""
        return self.info.sources


class AsyncGeneratorProvider(ABC):
    """A chat provider whose answers stream as an async iterator of strings."""

    url: ClassVar[str]
    model: ClassVar[str]
    working: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = False
    # What gpt4free's Client and AsyncClient read from a provider class besides the above; they
    # take a class with this interface, so no import of gpt4free is needed here.
    needs_auth: ClassVar[bool] = False
    use_stream_timeout: ClassVar[bool] = False  # its stream_timeout applies between chunks; ours is Timeout
    live: ClassVar[int] = 0  # gpt4free counts the calls that returned text here

    @classmethod
    def get_dict(cls) -> dict[str, str | None]:
        """The provider's name and address, as gpt4free shows them in its answers."""
        return {"name": cls.__name__, "url": cls.url, "label": getattr(cls, "label", None)}

    @classmethod
    def get_parent(cls) -> str:
        """gpt4free groups providers by parent (for API keys); ours stand alone."""
        return cls.__name__

    @classmethod
    @abstractmethod
    def create_async_generator(
        cls, model: str, messages: Messages, proxy: str | None = None, **kwargs: Any
    ) -> AsyncResult:
        """Stream the answer to ``messages`` token by token."""

    @classmethod
    async def create_async(cls, model: str, messages: Messages, proxy: str | None = None, **kwargs: Any) -> str:
        """The whole answer as one string."""
        return await cls.create_async_generator(model, messages, proxy, **kwargs).text()

    @classmethod
    def create_completion(cls, model: str, messages: Messages, stream: bool = True, **kwargs: Any) -> Iterator[str]:
        """A plain iterator of tokens (or of one joined answer with ``stream=False``).

        It works from synchronous code and from code already running inside an
        event loop (a notebook, a bot): the async call runs on a private loop
        in a worker thread.
        """
        check_messages(messages)
        tokens = iterate_in_thread(lambda: cls.create_async_generator(model, messages, **kwargs))
        if stream:
            return tokens
        return iter(["".join(tokens)])


class _LoopThread:
    """One event loop in a daemon thread, shared by every synchronous call."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="h2ochat-sync", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the worker loop and wait; an interrupt here cancels it there."""
        finished = threading.Event()

        async def guarded() -> T:
            try:
                return await coro
            finally:
                finished.set()

        future = asyncio.run_coroutine_threadsafe(guarded(), self.loop)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt (or any failure) in the waiting thread: cancel the
            # task and let its cleanup (deleting the conversation) finish first.
            future.cancel()
            finished.wait(timeout=30)
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


_worker: _LoopThread | None = None
_worker_lock = threading.Lock()


def _loop_thread() -> _LoopThread:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = _LoopThread()
            atexit.register(_worker.close)
        return _worker


def run_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run an awaitable to completion from synchronous code, inside a running loop or not."""

    async def call() -> T:
        return await make()

    return _loop_thread().run(call())


def iterate_in_thread(make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """Iterate an async iterator from synchronous code; closing the iterator closes it."""
    worker = _loop_thread()

    async def start() -> AsyncIterator[T]:
        return make()

    tokens = worker.run(start())
    closed = False
    try:
        while True:
            try:
                yield worker.run(_anext(tokens))
            except StopAsyncIteration:
                closed = True
                return
    finally:
        if not closed:
            aclose = getattr(tokens, "aclose", None)
            if aclose is not None:
                # aclose() on an async generator that a cancelled __anext__ already
                # finished is a no-op, but on one still marked running it raises.
                with contextlib.suppress(RuntimeError, concurrent.futures.CancelledError):
                    worker.run(aclose())


async def _anext(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()
