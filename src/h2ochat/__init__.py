"""h2ochat: talk to h2oGPT-style chat servers, and run one.

from h2ochat import H2o

async for token in H2o.create_async_generator("", [{"role": "user", "content": "Hi"}]):
    print(token, end="")

Or with OpenAI's shapes: ``h2ochat.Client(url).chat.completions.create(model=..., messages=...)``
(and ``h2ochat.AsyncClient``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from h2ochat.client import AsyncClient, Client
from h2ochat.protocol.errors import (
    ConnectError,
    ConnectTimeout,
    ConversationNotFound,
    DeleteFailedWarning,
    EventTooLarge,
    FirstTokenTimeout,
    GenerationError,
    GenerationFailed,
    H2oChatError,
    HTTPStatusError,
    IncompleteGeneration,
    IncompleteStream,
    InputValidationError,
    MalformedEvent,
    ModelOverloaded,
    ProtocolError,
    ProxyError,
    RateLimited,
    ReadError,
    ReadTimeout,
    ServerError,
    TimeoutException,
    TransportError,
)
from h2ochat.protocol.prompt import Message, Messages, format_prompt
from h2ochat.providers import AsyncGeneratorProvider, AsyncResult, CallInfo, H2o, H2oSession, Timeout

try:
    __version__ = version("h2ochat")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AsyncClient",
    "AsyncGeneratorProvider",
    "AsyncResult",
    "CallInfo",
    "Client",
    "ConnectError",
    "ConnectTimeout",
    "ConversationNotFound",
    "DeleteFailedWarning",
    "EventTooLarge",
    "FirstTokenTimeout",
    "GenerationError",
    "GenerationFailed",
    "H2o",
    "H2oChatError",
    "H2oSession",
    "HTTPStatusError",
    "IncompleteGeneration",
    "IncompleteStream",
    "InputValidationError",
    "MalformedEvent",
    "Message",
    "Messages",
    "ModelOverloaded",
    "ProtocolError",
    "ProxyError",
    "RateLimited",
    "ReadError",
    "ReadTimeout",
    "ServerError",
    "Timeout",
    "TimeoutException",
    "TransportError",
    "format_prompt",
    "__version__",
]
