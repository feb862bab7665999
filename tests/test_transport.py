"""The one HTTP transport, seen from both of its users: the client's session and the upstream backends.

Real loopback HTTP against small scripted servers: the same User-Agent from
both ends, and the first-token limit (which keep-alives do not satisfy) applied
to an upstream engine exactly as to the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from h2ochat import H2o
from h2ochat._version import __version__
from h2ochat.protocol.parameters import Parameters
from h2ochat.server.config import ModelConfig, OpenAIEndpoint
from h2ochat.server.inference.backends import EndpointUnavailable, GenerationRequest
from h2ochat.server.inference.backends.openai import OpenAIBackend
from tests.chatui import ChatUIDouble

Serve = Callable[..., Awaitable[TestServer]]
REQUEST = GenerationRequest([{"role": "user", "content": "Hi"}], None, Parameters())


class KeepAliveOnly:
    """An OpenAI-style engine that accepts the request, then sends only keep-alive comments."""

    def __init__(self) -> None:
        self.user_agents: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.user_agents.append(request.headers.get("User-Agent", ""))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b":\n\n")
            await asyncio.sleep(0.05)
        return response

    async def serve(self, aiohttp_server: Serve) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        return str((await aiohttp_server(app)).make_url("")).rstrip("/")


async def _first_token(backend: OpenAIBackend) -> None:
    await backend.start()
    try:
        async for _ in backend.generate(REQUEST):
            break
    finally:
        await backend.close()


async def test_keepalives_do_not_satisfy_an_upstreams_first_token_limit(aiohttp_server: Serve) -> None:
    engine = KeepAliveOnly()
    url = await engine.serve(aiohttp_server)
    backend = OpenAIBackend(OpenAIEndpoint(url=url, first_token_timeout=0.3), ModelConfig(name="m"))
    started = time.monotonic()
    with pytest.raises(EndpointUnavailable, match="first_token_timeout"):  # another endpoint may be tried
        await _first_token(backend)
    assert 0.25 < time.monotonic() - started < 3


async def test_both_ends_send_one_user_agent(aiohttp_server: Serve, chatui: tuple[ChatUIDouble, str]) -> None:
    engine = KeepAliveOnly()
    url = await engine.serve(aiohttp_server)
    with pytest.raises(EndpointUnavailable):
        await _first_token(OpenAIBackend(OpenAIEndpoint(url=url, first_token_timeout=0.1), ModelConfig(name="m")))
    double, chat_url = chatui
    await H2o.create_async("", [{"role": "user", "content": "Hi"}], url=chat_url)
    sent = {headers["User-Agent"] for _, _, headers in double.requests} | set(engine.user_agents)
    assert sent == {f"h2ochat/{__version__}"}
