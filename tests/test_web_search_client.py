"""The client's web search (issue 25): ``H2oSession.stream(..., web_search=True)``,
``H2o.create_async_generator(..., web_search=True)`` and ``h2ochat ask --web``, in both protocol
generations, against the project's server with a SearXNG stand-in and pages on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from h2ochat.providers import H2o, H2oSession
from h2ochat.server import RunningServer, start_server
from h2ochat.server.config import WebSearchConfig
from tests.helpers import FIXED_MODEL, fixed_config
from tests.websearch_standins import Web, served_web

QUESTION = [{"role": "user", "content": "How tall is the Eiffel Tower?"}]


@pytest.fixture
async def served() -> AsyncIterator[tuple[RunningServer, Web]]:
    async with served_web() as web:
        web.result("/paris", "Paris facts")
        search = WebSearchConfig(engine="searxng", searxng_url=web.url, allow_private=["127.0.0.2"])
        config = msgspec.structs.replace(fixed_config(echo_prompt=True), web_search=search)
        async with start_server(config) as server:
            yield server, web


@pytest.mark.parametrize("protocol", ["2023", "current"])
async def test_a_session_searches_first_and_the_result_carries_the_sources(
    served: tuple[RunningServer, Web], protocol: str
) -> None:
    server, web = served
    async with H2oSession(server.url, prefetch=False, protocol=protocol) as session:
        result = session.stream(QUESTION, FIXED_MODEL, web_search=True)
        text = await result.text()
        assert "330 metres tall" in text and "[1] Paris facts" in text  # the echoed prompt held the passage
        assert result.sources == [{"link": web.url + "/paris", "title": "Paris facts", "hostname": "127.0.0.2"}]
        plain = session.stream(QUESTION, FIXED_MODEL)
        assert "330 metres" not in await plain.text() and plain.sources == []
    assert len(web.asked) == 1


@pytest.mark.parametrize("protocol", ["2023", "current"])
async def test_the_provider_takes_web_search(served: tuple[RunningServer, Web], protocol: str) -> None:
    server, web = served
    result = H2o.create_async_generator(FIXED_MODEL, QUESTION, url=server.url, protocol=protocol, web_search=True)
    assert "330 metres tall" in "".join([token async for token in result])
    assert [s["link"] for s in result.sources] == [web.url + "/paris"]


async def test_ask_web_prints_the_sources(served: tuple[RunningServer, Web]) -> None:
    server, web = served
    environment = {k: v for k, v in os.environ.items() if k != "H2OCHAT_URL"}
    for extra in ([], ["--json"]):
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "h2ochat", "ask", "--web", "--url", server.url, "-m", FIXED_MODEL, *extra),
            "How tall is the Eiffel Tower?",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err
        if extra:
            answer: Any = json.loads(out)
            assert [s["link"] for s in answer["sources"]] == [web.url + "/paris"]
        else:
            assert f"Sources:\n[1] Paris facts <{web.url}/paris>" in out.decode()
