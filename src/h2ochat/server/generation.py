"""Models at run time: their backends, their queues, prompts, and the answers in progress.

``Models`` owns one :class:`ModelRuntime` per configured model. An answer in
progress is a :class:`Generation`, registered by conversation so that
stop-generating and shutdown can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from h2ochat.server.backends import (
    Backend,
    BackendError,
    EndpointUnavailable,
    GeneratedToken,
    GenerationRequest,
    create_backend,
)
from h2ochat.server.config import ConfigError, ModelConfig
from h2ochat.server.parameters import Parameters

__all__ = ["Generation", "ModelRuntime", "Models", "build_prompt", "build_request", "produce", "summarize"]

log = logging.getLogger("h2ochat.server")


def build_prompt(model: ModelConfig, messages: list[dict[str, str]]) -> str:
    """chat-ui's prompt: preprompt, then each message wrapped in the model's tokens,
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
    parts = [model.preprompt]
    for message in messages:
        content = message["content"]
        parts.append(start.get(message["role"], model.user_message_token) + content)
        if end and not content.endswith(end):
            parts.append(end)
    parts.append(model.assistant_message_token)
    return "".join(parts)


def build_request(model: ModelConfig, history: list[dict[str, str]], parameters: Parameters) -> GenerationRequest:
    """The backend's request: the preprompt leads the messages as a system message, and with
    chat-ui tokens the prompt is built here (backends that take messages use those)."""
    messages = history
    if model.preprompt and (not history or history[0]["role"] != "system"):
        messages = [{"role": "system", "content": model.preprompt}, *history]
    prompt = build_prompt(model, history) if model.uses_chatui_tokens else None
    return GenerationRequest(messages, prompt, parameters)


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
        self.defaults = config.defaults
        self.weights = [endpoint.weight for endpoint in config.endpoints]
        self.cooling: dict[int, float] = {}  # backend index -> when its cool-down ends (monotonic)
        limits = [backend.max_concurrency for backend in backends]
        total = None if any(limit is None for limit in limits) else sum(limit for limit in limits if limit)
        # asyncio.Semaphore wakes waiters in arrival order: the queue is fair.
        self._slots = asyncio.Semaphore(total) if total else None
        self.queued = 0  # requests waiting for a turn (GET /api/status)

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
        if self._slots is None:
            yield
            return
        self.queued += 1
        if self._slots.locked():
            log.info("model %s: every place is taken; %d request(s) queued", self.config.name, self.queued)
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        try:
            yield
        finally:
            self._slots.release()


@dataclass(eq=False)
class Generation:
    """One answer being generated; ``stop(reason)`` ends it at the next token."""

    conversation_id: str
    stop_reason: str | None = None
    _listeners: list[Callable[[], None]] = field(default_factory=list)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            for listener in self._listeners:
                listener()

    def on_stop(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)


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


_SUMMARY = (
    "Write a title of at most five words for a conversation that starts with the message below. "
    "Answer with the title only.\n\nMessage: {message}"
)


async def summarize(runtime: ModelRuntime, message: str) -> str:
    """A short title for a conversation, written by its model (greedy, a few tokens)."""
    parameters = Parameters(do_sample=False, max_new_tokens=24, truncate=1024)
    request = build_request(
        runtime.config, [{"role": "user", "content": _SUMMARY.format(message=message[:2000])}], parameters
    )
    parts: list[str] = []
    async for token in runtime.generate(request):
        if not token.special:
            parts.append(token.text)
        if token.finish_reason or len(parts) >= 24:
            break
    title = "".join(parts).strip().splitlines()[0:1]
    cleaned = title[0].strip(" \"'*#.:").strip() if title else ""
    return (cleaned or " ".join(message.split()[:5]) or "New Chat")[:100]


async def produce(runtime: ModelRuntime, request: GenerationRequest, queue: asyncio.Queue[object]) -> None:
    """Feed ``queue`` with the answer's tokens, then None; a failure is put there as the exception."""
    try:
        async for token in runtime.generate(request):
            queue.put_nowait(token)
    except BackendError as exc:
        queue.put_nowait(exc)
    except Exception as exc:  # a backend bug must reach the client as an error event, not a 500
        log.exception("backend of %s failed", runtime.config.name)
        queue.put_nowait(BackendError(f"the model failed: {type(exc).__name__}: {exc}"))
    queue.put_nowait(None)
