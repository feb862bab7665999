"""The h2oGPT chat provider: ``H2o.create_async_generator(model, messages)``.

Each call runs on its own :class:`H2oSession` (closed afterwards) unless an
open session is passed with ``session=``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from h2ochat.protocol.prompt import Messages
from h2ochat.protocol.tgi import DEFAULT_MODEL, DEFAULT_URL
from h2ochat.providers.base import AsyncGeneratorProvider, AsyncResult, CallInfo
from h2ochat.providers.defaults import server_model, server_url
from h2ochat.providers.session import H2oSession, Prepared

__all__ = ["DEFAULT_MODEL", "DEFAULT_URL", "TRANSPORT_OPTIONS", "H2o"]

# Keyword arguments that configure the call and are never sent as generation parameters.
TRANSPORT_OPTIONS = frozenset(
    {
        "url",
        "timeout",
        "stream",
        "headers",
        "cookies",
        "max_retries",
        "session",
        "max_event_size",
        "recommended",
        "protocol",
    }
)
# What gpt4free's clients add to every call: the provider itself, and their API key (h2oGPT has none).
_CALLER_NOISE = frozenset({"provider", "api_key"})


class H2o(AsyncGeneratorProvider):
    """The h2oGPT chat provider: ``H2o.create_async_generator(model, messages)`` streams an answer.

    Keyword arguments are generation parameters (``temperature=0.1``,
    ``max_new_tokens=64``, ``stop=[...]``, ``seed=1``, ``details=True``), except
    the transport options: ``url``, ``timeout``, ``headers``, ``cookies``,
    ``max_retries``, ``max_event_size``, ``stream``, ``recommended``, ``protocol``
    (``"2023"`` or ``"current"``; by default each call's session asks the server which
    it speaks) and ``session`` (an open :class:`H2oSession` to reuse instead of a new
    one per call). Today's chat-ui protocol carries no generation parameters: passing
    some to such a server warns (``ParametersIgnoredWarning``).

    The parameters not given are the original provider's (``temperature=0.4``,
    ``repetition_penalty=1.2``...), as code written for it expects; with
    ``recommended=True`` they are those the server recommends for the model, as
    :class:`H2oSession` and the clients use by default.

    The server is ``url=``, else this class's ``url`` when a subclass (or ``H2o.url = ...``)
    changed it, else ``H2OCHAT_URL``, else the historical address; ``model`` likewise (see
    :mod:`h2ochat.providers.defaults`). gpt4free's ``base_url`` and ``max_tokens`` are taken
    as ``url`` and ``max_new_tokens``, so the class works as a provider of its ``Client``.
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
        kwargs = _from_openai_names(kwargs)
        options = {name: kwargs.pop(name) for name in TRANSPORT_OPTIONS & kwargs.keys()}
        model = server_model(model, cls.model)
        options.pop("stream", None)  # the protocol always streams; the sync helper reads it
        session: H2oSession | None = options.pop("session", None)
        if session is not None:
            if options or proxy is not None:
                raise ValueError(
                    f"{', '.join(sorted(options)) or 'proxy'} cannot be combined with session=: "
                    "set it when creating the H2oSession"
                )
            return session.stream(messages, model, **kwargs)
        options["url"] = server_url(options.get("url"), cls.url)
        options.setdefault("recommended", False)  # the original provider's defaults, unless asked
        one_shot = H2oSession(proxy=proxy, prefetch=False, **options)
        request = one_shot.prepare(messages, model, kwargs)
        return AsyncResult(lambda info: _one_shot(one_shot, info, request))


def _from_openai_names(kwargs: dict[str, Any]) -> dict[str, Any]:
    """gpt4free's (and OpenAI's) names for our options, and what its clients add, dropped."""
    kwargs = {name: value for name, value in kwargs.items() if name not in _CALLER_NOISE}
    base_url = kwargs.pop("base_url", None)
    if base_url and not kwargs.get("url"):
        kwargs["url"] = base_url
    max_tokens = kwargs.pop("max_tokens", None)
    if max_tokens is not None:
        kwargs.setdefault("max_new_tokens", max_tokens)
    return kwargs


async def _one_shot(session: H2oSession, info: CallInfo, request: Prepared) -> AsyncIterator[str]:
    """One call on its own session, closed afterwards whatever happens."""
    try:
        async with contextlib.aclosing(session.call(info, request)) as tokens:
            async for token in tokens:
                yield token
    finally:
        await session.aclose()
