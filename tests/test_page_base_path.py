"""The web page in Chromium under ``h2ochat serve --base-path /chat``: it chats, and never leaves the prefix."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser import FIXED_MODELS, Served, fixed_toml, wait_answer, wait_until


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("base")
    config = directory / "models.toml"
    config.write_text(fixed_toml({"test/echo": FIXED_MODELS["test/echo"]}), encoding="utf-8")
    # A trailing slash, as people write it: the server keeps /chat.
    server = Served(["--config", str(config), "--db", str(directory / "chat.db"), "--base-path", "/chat/"]).start()
    yield server
    server.stop()


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def record_paths(page: Page) -> list[str]:
    """The path of every request the page makes to its server from now on."""
    paths: list[str] = []

    def seen(request: Request) -> None:
        url = urllib.parse.urlsplit(request.url)
        if url.scheme.startswith("http"):
            paths.append(url.path)

    page.on("request", seen)
    return paths


def test_serve_names_the_prefix_in_its_address(served: Served) -> None:
    assert urllib.parse.urlsplit(served.url).path == "/chat"
    wait_until(lambda: any(f"Chat in a web browser: {served.url}/" in line for line in served.log))


@pytest.mark.parametrize("start", ["/chat/", "/chat"])
def test_the_page_chats_under_chat(served: Served, visit: Any, tmp_path: Path, start: str) -> None:
    site = served.url.removesuffix("/chat")
    # Absolute: Playwright would resolve "/" against the context's base URL to the host's root.
    v = visit(served.url, path=site + start, accept=False)
    paths = record_paths(v.page)
    v.page.get_by_role("button", name="Start chatting").click()  # POST /chat/settings
    v.page.wait_for_selector("#welcome:not([open])", state="attached")
    cookies = v.page.context.cookies()
    assert [(cookie["name"], cookie["path"]) for cookie in cookies] == [("hf-chat", "/chat")]

    send(v.page, "Hello from under a prefix")
    expect(wait_answer(v.page)).to_contain_text("Hello from under a prefix")
    expect(v.page).to_have_url(re.compile(re.escape(site) + "/chat/conversation/[^/]+$"))
    conversation = urllib.parse.urlsplit(v.page.url).path.rsplit("/", 1)[1]
    link = v.page.locator("#conversation-list a").first
    expect(link).to_have_attribute("href", f"/chat/conversation/{conversation}")

    stored = v.page.get_by_role("article", name="Assistant")
    v.page.reload()  # the conversation is read back from the address under the prefix
    v.page.wait_for_selector("body[data-ready]")
    expect(stored).to_contain_text("Hello from under a prefix")

    v.page.get_by_role("button", name="New chat").click()
    expect(v.page).to_have_url(site + "/chat/")
    link.click()  # back to it through the sidebar
    expect(v.page).to_have_url(f"{site}/chat/conversation/{conversation}")
    expect(stored).to_contain_text("Hello from under a prefix")

    assert paths and all(path.startswith("/chat/") for path in paths), sorted(set(paths))
    assert {"/chat/settings", "/chat/conversation", f"/chat/conversation/{conversation}"} <= set(paths)
    assert v.watcher.errors == [] and v.watcher.dialogs == []
