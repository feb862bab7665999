"""h2ochat: talk to h2oGPT-style chat servers, and run one.

from h2ochat import H2o

async for token in H2o.create_async_generator("", [{"role": "user", "content": "Hi"}]):
    print(token, end="")

Or with OpenAI's shapes: ``h2ochat.Client(url).chat.completions.create(model=..., messages=...)``
(and ``h2ochat.AsyncClient``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from h2ochat._version import __version__

if TYPE_CHECKING:  # the names as mypy and editors see them; at run time __getattr__ imports them
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
        ParametersIgnoredWarning,
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
    "ParametersIgnoredWarning",
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

# Where each public name lives. Importing them lazily keeps ``import h2ochat.protocol``
# (and every other inner module) from loading the client, the providers and aiohttp.
_HOMES = {
    **dict.fromkeys(("AsyncClient", "Client"), "h2ochat.client"),
    **dict.fromkeys(("Message", "Messages", "format_prompt"), "h2ochat.protocol.prompt"),
    **dict.fromkeys(
        ("AsyncGeneratorProvider", "AsyncResult", "CallInfo", "H2o", "H2oSession", "Timeout"), "h2ochat.providers"
    ),
}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'h2ochat' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES.get(name, "h2ochat.protocol.errors")), name)
    globals()[name] = value  # the next look-up finds it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
