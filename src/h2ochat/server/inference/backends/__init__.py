"""Generation backends: one interface, one small module each.

A backend streams tokens for a request: ``generate(request)`` is an async
iterator of :class:`GeneratedToken`, the last of which carries the finish
reason. Closing the iterator early (``aclose()``) must stop the generation
within a token or two; that is how a vanished client or stop-generating
reaches the model.

    BackendError              a generation failed (error_type: the TGI error type)
    ├── InputTooLong          the prompt does not fit the context (validation)
    ├── Overloaded            no place for the request: the wait queue is full, or the wait too long
    └── EndpointUnavailable   an upstream could not take the request, before any token:
                              another endpoint of the model may (connection refused, 5xx, 429, timeout)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from h2ochat.protocol.parameters import Parameters
from h2ochat.server.config import Endpoint, FixedEndpoint, LlamaEndpoint, ModelConfig, OpenAIEndpoint, TgiEndpoint

__all__ = [
    "Backend",
    "BackendError",
    "EndpointUnavailable",
    "GeneratedToken",
    "GenerationRequest",
    "InputTooLong",
    "Overloaded",
    "TokenCounter",
    "create_backend",
]


class GeneratedToken(NamedTuple):
    id: int
    text: str
    logprob: float | None = None
    special: bool = False
    finish_reason: str | None = None  # set on the last token: length, eos_token or stop_sequence
    prompt_tokens: int | None = None  # the prompt's length in tokens, when the backend knows it


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: the chat so far, and the prompt if the model uses chat-ui tokens.

    ``messages`` starts with the model's preprompt as a system message (when it
    has one). ``prompt`` is None when the model's own chat template applies; the
    backend renders ``messages`` with it then. ``prefix`` is the start of an answer
    to continue (``is_continue``): the model goes on from its last word; with
    chat-ui tokens it already ends ``prompt``.
    """

    messages: list[dict[str, str]]
    prompt: str | None
    parameters: Parameters
    prefix: str = ""


class BackendError(Exception):
    """A generation failed; ``error_type`` is the TGI error type sent to the client.

    ``public``, when set, is what the client is told instead of the message:
    an upstream's failure names internal addresses and quotes its bodies, which
    belong in the server's log, not in an answer.
    """

    error_type = "generation"
    public: str | None = None

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        if error_type is not None:
            self.error_type = error_type


class InputTooLong(BackendError):
    """The prompt does not fit the model's context."""

    error_type = "validation"


class Overloaded(BackendError):
    """No place for the request now; ``retry_after``: seconds after which a try is likely to succeed."""

    error_type = "overloaded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EndpointUnavailable(BackendError):
    """An upstream endpoint could not take the request; raised only before the first token."""


class Backend(Protocol):
    #: How many generations may run at once (None: no limit); more wait in line, first come first served.
    max_concurrency: int | None

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GeneratedToken]: ...


@runtime_checkable
class TokenCounter(Protocol):
    """A backend that knows its model's tokens (the embedded one), so the server can fit a chat to it."""

    @property
    def context_per_answer(self) -> int:
        """Tokens one answer may hold, its prompt included."""
        ...

    def count_tokens(self, request: GenerationRequest) -> int:
        """The request's prompt in tokens, as the backend would send it (before ``truncate``)."""
        ...


def create_backend(endpoint: Endpoint, model: ModelConfig) -> Backend:
    """The backend for one of ``model``'s endpoints; a ``ConfigError`` if the two do not fit."""
    if isinstance(endpoint, LlamaEndpoint):
        from h2ochat.server.inference.backends.llama import LlamaBackend

        return LlamaBackend(endpoint)
    if isinstance(endpoint, FixedEndpoint):
        from h2ochat.server.inference.backends.fixed import FixedBackend

        return FixedBackend(endpoint)
    if isinstance(endpoint, TgiEndpoint):
        from h2ochat.server.inference.backends.tgi import TgiBackend

        return TgiBackend(endpoint, model)
    if isinstance(endpoint, OpenAIEndpoint):
        from h2ochat.server.inference.backends.openai import OpenAIBackend

        return OpenAIBackend(endpoint, model)
    raise TypeError(f"no backend for endpoint type {type(endpoint).__name__}")
