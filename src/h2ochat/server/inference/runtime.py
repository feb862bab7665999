"""Models at run time: their backends, their queues, prompts, and the answers in progress.

``Models`` owns one :class:`ModelRuntime` per configured model. An answer in
progress is a :class:`Generation`, registered by conversation so that
stop-generating and shutdown can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from h2ochat.protocol.parameters import Parameters
from h2ochat.server.config import ConfigError, ModelConfig
from h2ochat.server.inference.backends import (
    Backend,
    EndpointUnavailable,
    GeneratedToken,
    GenerationRequest,
    InputTooLong,
    Overloaded,
    TokenCounter,
    create_backend,
)

__all__ = [
    "Fitted",
    "Generation",
    "Interrupted",
    "ModelRuntime",
    "Models",
    "TokenLimits",
    "build_prompt",
    "build_request",
]

log = logging.getLogger("h2ochat.server")


def build_prompt(model: ModelConfig, messages: list[dict[str, str]], preprompt: str | None = None) -> str:
    """chat-ui's prompt: preprompt (the model's unless given), then each message wrapped in the model's tokens,
    ending with the assistant token, e.g.
    ``<|prompt|>hi<|endoftext|><|answer|>hello<|endoftext|><|prompt|>bye<|endoftext|><|answer|>``.
    """
    assert model.user_message_token is not None and model.assistant_message_token is not None
    start = {
        "user": model.user_message_token,
        "assistant": model.assistant_message_token,
        "system": model.system_message_token if model.system_message_token is not None else model.user_message_token,
    }
    end = model.message_end_token
    parts = [model.preprompt if preprompt is None else preprompt]
    for message in messages:
        content = message["content"]
        parts.append(start.get(message["role"], model.user_message_token) + content)
        if end and not content.endswith(end):
            parts.append(end)
    parts.append(model.assistant_message_token)
    return "".join(parts)


def build_request(
    model: ModelConfig,
    history: list[dict[str, str]],
    parameters: Parameters,
    prefix: str = "",
    *,
    system: str | None = None,
) -> GenerationRequest:
    """The backend's request: the system prompt (``system``, a conversation's own, else the model's
    preprompt) leads the messages as a system message, and with chat-ui tokens the prompt is built
    here (backends that take messages use those). ``prefix``: the start of the answer, to be continued."""
    messages = history
    preprompt = model.preprompt if system is None else system
    if preprompt and (not history or history[0]["role"] != "system"):
        messages = [{"role": "system", "content": preprompt}, *history]
    prompt = build_prompt(model, history, preprompt) + prefix if model.uses_chatui_tokens else None
    return GenerationRequest(messages, prompt, parameters, prefix)


class TokenLimits(NamedTuple):
    """What one answer of a model may hold, in tokens (``GET /api/models`` publishes it)."""

    context: int  # the prompt and the answer together
    input: int  # the most a prompt may take: the system prompt and the newest message must fit here


class Fitted(NamedTuple):
    request: GenerationRequest
    left_out: int  # earlier messages that did not fit and were not sent


class ModelRuntime:
    """A configured model with its started backends and its first-come-first-served queue.

    With several endpoints, each request goes to one picked by weight among
    those not cooling down. One that fails before its first token
    (:class:`EndpointUnavailable`) cools down for ``cooldown`` seconds and the
    request goes to another; after the first token a failure reaches the client.
    """

    def __init__(self, config: ModelConfig, backends: list[Backend]) -> None:
        self.config = config
        self.backends = backends
        self.defaults = config.parameters
        self.weights = [endpoint.weight for endpoint in config.endpoints]
        self.cooling: dict[int, float] = {}  # backend index -> when its cool-down ends (monotonic)
        limits = [backend.max_concurrency for backend in backends]
        total = None if any(limit is None for limit in limits) else sum(limit for limit in limits if limit)
        # asyncio.Semaphore wakes waiters in arrival order: the queue is fair.
        self._slots = asyncio.Semaphore(total) if total else None
        self.places = total or 0
        # Counted as requests enter and leave, not read off the semaphore: a wait begun but not yet
        # scheduled would not show there, and a burst of requests would all slip through.
        self.waiting = 0
        self.running = 0
        self._turn_seconds = 10.0  # a running average of how long a turn lasts, for Retry-After

    @property
    def _counter(self) -> TokenCounter | None:
        # Endpoints of one model serve the same model; the first that can count tokens speaks for all.
        return next((backend for backend in self.backends if isinstance(backend, TokenCounter)), None)

    def token_limits(self) -> TokenLimits | None:
        """The model's limits when a backend can count tokens (the embedded model); None upstream."""
        counter = self._counter
        if counter is None:
            return None
        context = counter.context_per_answer
        # An answer always has room for a few sentences, whatever the prompt.
        floor = min(self.defaults.max_new_tokens or 256, context // 4)
        return TokenLimits(context=context, input=context - floor)

    async def fit(
        self, messages: list[dict[str, str]], parameters: Parameters, prefix: str = "", *, system: str | None = None
    ) -> Fitted:
        """The request for ``messages`` (the chat, the newest message last) that fits the model.

        The system prompt and the newest message are always sent (:class:`InputTooLong`, in plain
        words, when they alone do not fit); then as many earlier messages as fit, newest first,
        leaving room for the answer. Counted only where a backend counts tokens; upstream
        servers apply their own ``truncate``. ``prefix``: an answer being continued, which is
        sent whole too. ``system``: the conversation's system prompt (else the model's preprompt).
        """
        counter, limits = self._counter, self.token_limits()
        if counter is None or limits is None:
            return Fitted(build_request(self.config, messages, parameters, prefix, system=system), 0)
        return await asyncio.to_thread(self._fit, counter, limits, messages, parameters, prefix, system)

    def _fit(
        self,
        counter: TokenCounter,
        limits: TokenLimits,
        messages: list[dict[str, str]],
        parameters: Parameters,
        prefix: str,
        system: str | None,
    ) -> Fitted:
        def request(kept: int) -> GenerationRequest:
            kept_messages = messages[len(messages) - 1 - kept :]
            return build_request(self.config, kept_messages, parameters, prefix, system=system)

        # A client's truncate wins: the backend keeps the prompt's last ``truncate`` tokens.
        cut = parameters.truncate or limits.context
        alone = min(counter.count_tokens(request(0)), cut)
        if alone > limits.input:
            raise InputTooLong(
                f"This message is about {alone:,} tokens; this model takes about {limits.input:,} at a time. "
                "Shorten it."
            )
        room = limits.context - min(parameters.max_new_tokens or limits.context // 2, limits.context // 2)
        earlier = len(messages) - 1
        if min(counter.count_tokens(request(earlier)), cut) <= max(room, alone):
            return Fitted(request(earlier), 0)
        # The most earlier messages that fit: the prompt grows with each one kept, so bisect.
        low, high = 0, earlier - 1
        while low < high:
            middle = (low + high + 1) // 2
            if counter.count_tokens(request(middle)) <= room:
                low = middle
            else:
                high = middle - 1
        kept = low
        if kept and messages[len(messages) - 1 - kept]["role"] == "assistant":
            kept -= 1  # an answer without its question would only confuse the model
        return Fitted(request(kept), earlier - kept)

    def admit(self) -> None:
        """Refuse at once (:class:`Overloaded`) when every place is taken and the wait queue is full."""
        if self._slots is not None and self.waiting + self.running >= self.places + self.config.max_queue:
            raise Overloaded(
                f"The model {self.config.name} is busy: {self.places} answers running and {self.waiting} "
                f"waiting, the most this server queues; try again in {self.retry_after()} s",
                self.retry_after(),
            )

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved enough for one more request."""
        estimate = self._turn_seconds * (self.waiting + 1) / max(1, self.places)  # places: all running
        return max(1, min(60, math.ceil(estimate)))

    def pick(self, tried: set[int]) -> int:
        """A backend not tried yet, by weight, preferring those not cooling down."""
        untried = [index for index in range(len(self.backends)) if index not in tried]
        now = time.monotonic()
        ready = [index for index in untried if self.cooling.get(index, 0.0) <= now]
        # When every one left is cooling down, try them anyway: a cool-down is a hint, not a ban.
        pool = ready or untried
        if len(pool) == 1:
            return pool[0]
        return random.choices(pool, [self.weights[index] for index in pool])[0]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GeneratedToken]:
        """Wait for a turn, then stream the tokens of the first backend that starts answering."""
        async with self._turn():
            tried: set[int] = set()
            while True:
                index = self.pick(tried)
                tried.add(index)
                async with contextlib.aclosing(self.backends[index].generate(request)) as tokens:  # type: ignore[type-var]
                    try:
                        first = await anext(tokens)
                    except StopAsyncIteration:
                        return
                    except EndpointUnavailable as exc:
                        self._cool_down(index, exc)
                        if len(tried) == len(self.backends):
                            raise
                        continue
                    yield first
                    async for token in tokens:
                        yield token
                    return

    def _cool_down(self, index: int, error: EndpointUnavailable) -> None:
        if len(self.backends) > 1:
            self.cooling[index] = time.monotonic() + self.config.cooldown
            log.warning(
                "an endpoint of %s failed before its first token; skipping it for %s s: %s",
                self.config.name,
                self.config.cooldown,
                error,
            )

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._slots is None:  # no limit here (the engine queues): counted for /api/status only
            self.running += 1
            try:
                yield
            finally:
                self.running -= 1
            return
        self.admit()  # again where the wait begins: others may have come since the request was admitted
        self.waiting += 1
        if self.running >= self.places:
            log.info("model %s: every place is taken; %d request(s) waiting", self.config.name, self.waiting)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.config.max_wait)
        except asyncio.TimeoutError:
            raise Overloaded(
                f"Waited {self.config.max_wait:g} s for the model {self.config.name} without a turn; "
                f"try again in {self.retry_after()} s",
                self.retry_after(),
            ) from None
        finally:
            self.waiting -= 1
        self.running += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            self._turn_seconds = 0.8 * self._turn_seconds + 0.2 * (time.monotonic() - started)


class Interrupted(Exception):
    """The answer was stopped before its end (stop-generating, shutdown, the client left); the message says why."""


@dataclass(eq=False)
class Generation:
    """One answer being generated; ``stop(reason)`` ends it at once.

    The answer loop runs inside ``interruptible()``. A stop cancels the loop's
    task while it waits (for the model's next token, or for the client to take
    an event), and the block turns that cancellation into :class:`Interrupted`:
    the loop waits on the model and on the stop at the same time without a
    queue or a task per token in between.
    """

    conversation_id: str
    stop_reason: str | None = None
    _task: asyncio.Task[Any] | None = None
    _cancelled: bool = False

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            if self._task is not None:
                self._cancelled = True
                self._task.cancel()

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        if self.stop_reason is not None:
            raise Interrupted(self.stop_reason)
        task = asyncio.current_task()
        self._task = task
        try:
            yield
        except asyncio.CancelledError:
            if not self._cancelled:
                raise  # cancelled from outside (the server stopping the handler): not ours to swallow
            self._cancelled = False
            if not _uncancel(task):
                raise  # someone else cancelled the task too
            raise Interrupted(self.stop_reason or "stopped") from None
        finally:
            self._task = None
            if self._cancelled:  # our cancellation was swallowed inside the block: withdraw it
                self._cancelled = False
                _uncancel(task)


def _uncancel(task: asyncio.Task[Any] | None) -> bool:
    """Withdraw our one cancellation request; False if someone else asked too (Python 3.11+ counts them)."""
    if task is None or sys.version_info < (3, 11):
        return True
    return task.uncancel() == 0


class Models:
    """Every model's runtime, and the registry of answers in progress."""

    def __init__(self, configs: list[ModelConfig]) -> None:
        self.configs = configs
        self.runtimes: dict[str, ModelRuntime] = {}
        self.active: dict[str, set[Generation]] = {}
        self.closing = False

    async def start(self) -> None:
        for config in self.configs:
            backends = [create_backend(endpoint, config) for endpoint in config.endpoints]
            # Registered before starting, so that close() reaches the started ones if a later start fails.
            self.runtimes[config.name] = ModelRuntime(config, backends)
            for backend in backends:
                await backend.start()
                if not config.uses_chatui_tokens and getattr(backend, "has_chat_template", True) is False:
                    raise ConfigError(
                        f"the model {config.name!r} has no chat template of its own: set user_message_token, "
                        "assistant_message_token and message_end_token in its configuration"
                    )
            log.info("model %s ready (%s)", config.name, ", ".join(type(b).__name__ for b in backends))

    async def close(self) -> None:
        for runtime in self.runtimes.values():
            for backend in runtime.backends:
                try:
                    await backend.close()
                except Exception:  # closing is best effort; one failure must not keep others open
                    log.exception("closing a backend of %s failed", runtime.config.name)
        self.runtimes.clear()

    def get(self, name: str) -> ModelRuntime | None:
        return self.runtimes.get(name)

    @property
    def names(self) -> list[str]:
        return [config.name for config in self.configs]

    @contextlib.contextmanager
    def track(self, conversation_id: str):  # type: ignore[no-untyped-def]
        generation = Generation(conversation_id)
        self.active.setdefault(conversation_id, set()).add(generation)
        if self.closing:
            generation.stop("the server is shutting down")
        try:
            yield generation
        finally:
            running = self.active.get(conversation_id, set())
            running.discard(generation)
            if not running:
                self.active.pop(conversation_id, None)

    def stop_conversation(self, conversation_id: str, reason: str) -> int:
        running = list(self.active.get(conversation_id, ()))
        for generation in running:
            generation.stop(reason)
        return len(running)

    def stop_all(self, reason: str) -> None:
        self.closing = True
        for running in list(self.active.values()):
            for generation in list(running):
                generation.stop(reason)
