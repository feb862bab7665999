"""Web search on the page in Chromium (issue 25): the "Search the web" switch (only with an engine),
the progress, and the "Sources" list under the answer, also after a reload."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser import ARTIFACTS, Served, fixed_toml, wait_answer
from tests.websearch_standins import Web, served_web


@pytest.fixture(scope="module")
def standin() -> Iterator[Web]:
    """The SearXNG stand-in and its pages, on a loop of their own (the browser's API is synchronous)."""
    loop = asyncio.new_event_loop()
    ready: list[Web] = []
    stop = asyncio.Event()

    async def serve() -> None:
        async with served_web() as web:
            web.result("/paris", "Paris facts")
            web.result("http://10.0.0.1/", "Intranet")  # refused: listed as skipped, not a source
            ready.append(web)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    while not ready:
        thread.join(0.05)
    yield ready[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture(scope="module")
def search_server(standin: Web, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory: Path = tmp_path_factory.mktemp("search-page")
    models = {"test/echo": ("Echo of the prompt", {"echo_prompt": True})}
    search = f'\n[web_search]\nengine = "searxng"\nsearxng_url = "{standin.url}"\nallow_private = ["127.0.0.2"]\n'
    (directory / "models.toml").write_text(fixed_toml(models) + search, encoding="utf-8")
    served = Served(["--config", str(directory / "models.toml"), "--db", str(directory / "page.db")]).start()
    yield served
    served.stop()


def test_the_switch_searches_and_the_sources_are_listed(search_server: Served, standin: Web, visit: Any) -> None:
    page = visit(search_server.url).page
    switch = page.get_by_role("switch", name="Search the web")
    expect(switch).to_be_visible()
    switch.check()
    box = page.get_by_role("textbox", name="Message")
    box.fill("How tall is the Eiffel Tower?")
    box.press("Enter")
    wait_answer(page)
    answer = page.get_by_role("article", name="Assistant")
    expect(answer).to_contain_text("330 metres tall")  # the echoed prompt: the passage reached the model
    sources = answer.get_by_role("list", name="Sources")
    link = sources.get_by_role("link", name="Paris facts")
    expect(link).to_have_attribute("href", f"{standin.url}/paris")
    expect(answer.get_by_role("status")).to_have_text("Searched the web: 1 source.")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "web-search.png")
    page.reload()
    page.wait_for_selector("body[data-ready]")
    again = page.get_by_role("article", name="Assistant")
    expect(again.get_by_role("list", name="Sources").get_by_role("link")).to_have_text(["Paris facts"])
    # The choice is the session's (searchEnabled): the reloaded page starts with it.
    expect(page.get_by_role("switch", name="Search the web")).to_be_checked()
    # Off, the next question is not searched: no sources under its answer.
    page.get_by_role("switch", name="Search the web").uncheck()
    box = page.get_by_role("textbox", name="Message")
    box.fill("And without the web?")
    box.press("Enter")
    wait_answer(page)
    expect(page.get_by_role("article", name="Assistant").last.get_by_role("list", name="Sources")).to_have_count(0)
    page.reload()
    page.wait_for_selector("body[data-ready]")
    expect(page.get_by_role("switch", name="Search the web")).to_be_visible()
    expect(page.get_by_role("switch", name="Search the web")).not_to_be_checked()


def test_without_an_engine_there_is_no_switch(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    page.wait_for_load_state("networkidle")
    expect(page.get_by_role("switch", name="Search the web")).to_have_count(0)
