"""gpt4free's ``HuggingChat`` with ``web_search=True`` against the project's server (issue 25): it sends
``"web_search": true`` as chat-ui 2024's page did, and reads the ``webSearch`` sources update into its
``Sources``. Run unchanged, pointed at the server as tests/test_peers_current.py does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from h2ochat.server import RunningServer, start_server
from h2ochat.server.config import WebSearchConfig
from tests.helpers import fixed_config
from tests.test_peers_current import BASE, g4f_home, g4f_login, g4f_provider, g4f_turn, issued_cookie
from tests.websearch_standins import served_web

__all__ = ["g4f_home"]  # the fixture, imported to be found here

Sources = pytest.importorskip("g4f.providers.response").Sources


@pytest.fixture
async def server() -> AsyncIterator[tuple[RunningServer, str]]:
    async with served_web() as web:
        web.result("/paris", "Paris facts")
        search = WebSearchConfig(engine="searxng", searxng_url=web.url, allow_private=["127.0.0.2"])
        config = msgspec.structs.replace(
            fixed_config(echo_prompt=True), base_path=BASE, allowed_hosts=["127.0.0.1"], web_search=search
        )
        async with start_server(config) as running:
            yield running, web.url


async def test_g4f_huggingchat_web_search_gets_the_sources(server: tuple[RunningServer, str], g4f_home: Path) -> None:
    running, web_url = server
    provider = g4f_provider(running)
    g4f_login(provider, await issued_cookie(running))
    chunks = await g4f_turn(provider, [{"role": "user", "content": "How tall is the Eiffel Tower?"}], web_search=True)
    text = "".join(c for c in chunks if isinstance(c, str))
    assert "330 metres tall" in text and "[1] Paris facts" in text
    sources = [c for c in chunks if isinstance(c, Sources)]
    assert len(sources) == 1 and [s["url"] for s in sources[0].list] == [web_url + "/paris"]
