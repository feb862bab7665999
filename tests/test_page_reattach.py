"""The page follows an answer that outlives its connection (issue 22), in Chromium: a reload, the
network gone and back, a second tab, and a stop from that tab."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from reliability.cutter import CuttingProxy
from tests.browser import Served, fixed_toml, wait_answer

WORDS = 150
STEADY = "".join(f"s{i} " for i in range(WORDS)).strip()


@pytest.fixture(scope="module")
def steady(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server whose one model answers 150 numbered words in about 3 s."""
    directory = tmp_path_factory.mktemp("reattach")
    config = directory / "models.toml"
    config.write_text(fixed_toml({"test/steady": ("Steady model", {"text": STEADY, "delay": 0.02})}), encoding="utf-8")
    served = Served(["--config", str(config), "--db", str(directory / "reattach.db")]).start()
    yield served
    served.stop()


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def answer_text(page: Page) -> str:
    return page.get_by_role("article", name="Assistant").last.locator(".body").inner_text().strip()


def stored_answer(page: Page) -> dict[str, Any]:
    response = page.request.get("/api/conversation/" + page.url.rsplit("/", 1)[1])
    assert response.ok
    return [m for m in response.json()["messages"] if m["role"] == "assistant"][-1]


def test_a_reload_mid_answer_follows_it_to_its_end(steady: Served, visit: Any) -> None:
    v = visit(steady.url)
    page = v.page
    send(page, "go")
    expect(page.get_by_role("article", name="Assistant")).to_contain_text("s10")
    page.reload()
    page.wait_for_selector("body[data-ready]")
    answer = page.get_by_role("article", name="Assistant")
    expect(answer).to_have_attribute("aria-busy", "true")  # still being written, on screen
    wait_answer(page)
    expect(answer.locator(".body")).to_have_text(STEADY)  # every word once, in order
    assert stored_answer(page)["status"] == "done" and stored_answer(page)["content"] == STEADY
    assert v.watcher.errors == []


@pytest.fixture
def flaky(steady: Served) -> Iterator[tuple[str, Callable[[], int]]]:
    """The server behind a network that can drop (reliability/cutter.py), run on a thread of its own:
    its address, and what drops every connection carrying an answer now."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    port = int(steady.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port, lambda: None)
    url = asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)

    def drop() -> int:
        return asyncio.run_coroutine_threadsafe(_call(proxy.drop), loop).result(10)

    yield url, drop
    asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


async def _call(function: Callable[[], int]) -> int:
    return function()


def test_the_network_gone_and_back_mid_answer_loses_nothing(flaky: tuple[str, Callable[[], int]], visit: Any) -> None:
    url, drop = flaky
    v = visit(url)
    page = v.page
    streams: list[str] = []
    page.on("request", lambda request: "/stream?" in request.url and streams.append(request.url))
    send(page, "go")
    expect(page.get_by_role("article", name="Assistant")).to_contain_text("s10")
    page.context.set_offline(True)
    assert drop() == 1  # the network goes: the answer's connection with it
    page.wait_for_timeout(1500)  # tries to reattach fail meanwhile
    assert stored_answer(page)["status"] == "generating"  # the server went on without the page
    page.context.set_offline(False)
    wait_answer(page)
    expect(page.get_by_role("article", name="Assistant").locator(".body")).to_have_text(STEADY)
    assert stored_answer(page)["content"] == STEADY
    # Reattached from the last event it had drawn, naming the answer's run.
    assert streams and all("generationId=" in u and "fromSeq=0" not in u for u in streams), streams


def test_a_second_tab_shows_the_same_answer_growing_and_its_stop_ends_both(
    steady: Served, visit: Any, browser: Any
) -> None:
    v = visit(steady.url)
    first = v.page
    send(first, "go")
    expect(first.get_by_role("article", name="Assistant")).to_contain_text("s5")
    second = first.context.new_page()  # the same browser: the same session
    second.goto(first.url)
    second.wait_for_selector("body[data-ready]")
    answer = second.get_by_role("article", name="Assistant")
    expect(answer).to_have_attribute("aria-busy", "true")
    expect(answer).to_contain_text("s40")  # growing here too
    second.get_by_role("button", name="Stop").click()
    for page in (first, second):
        page.bring_to_front()  # a tab in the background draws nothing (no animation frames) until shown
        wait_answer(page)
        expect(page.get_by_role("article", name="Assistant").locator(".note.ending")).to_contain_text("Stopped")
    saved = stored_answer(first)
    assert saved["status"] == "interrupted"
    assert STEADY.startswith(saved["content"]) and saved["content"] != STEADY
    for page in (first, second):  # each shows, once each word, what it was sent before the stop
        shown = answer_text(page)
        assert STEADY.startswith(shown), shown
    assert v.watcher.errors == []
