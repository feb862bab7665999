"""The web page in Chromium: answers that go on in the background, per-conversation settings, and one
banner while the server is away (issue 26).
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, expect

from tests.browser import SLOW_ANSWER, Served, fixed_toml, wait_answer, wait_until


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def choose(page: Page, model: str) -> None:
    page.get_by_label("Model").select_option(model)


def shown_id(page: Page) -> str:
    page.wait_for_url("**/conversation/*")
    return page.url.rsplit("/", 1)[1]


def stored(page: Page, conversation: str) -> dict[str, Any]:
    """The conversation as the server saved it, read with the page's own cookie; its messages without the
    tree's system root (issue 20), which the page never shows."""
    response = page.request.get(f"/api/conversation/{conversation}")
    assert response.ok, response.text()
    data = dict(response.json())
    data["messages"] = [m for m in data["messages"] if m["role"] != "system"]
    return data


def sent_messages(page: Page) -> list[tuple[str, dict[str, Any]]]:
    """(conversation id, body) of each message the page sends from now on, as it is sent."""
    sent: list[tuple[str, dict[str, Any]]] = []

    def seen(request: Request) -> None:
        match = re.search(r"/conversation/([0-9a-f]{24})$", request.url)
        if request.method == "POST" and match:
            sent.append((match.group(1), json.loads(request.post_data or "{}")))

    page.on("request", seen)
    return sent


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A server of this test's own, with a database file: it is stopped and started again."""
    config = tmp_path / "models.toml"
    config.write_text(fixed_toml(), encoding="utf-8")
    server = Served(["--config", str(config), "--db", str(tmp_path / "chat.db")]).start()
    yield server
    server.stop()


# 1. An answer goes on while the person is elsewhere --------------------------------------------------------


def test_an_answer_goes_on_while_another_conversation_is_used(page_server: Served, visit: Any) -> None:
    v = visit(page_server.url)
    page = v.page
    stops: list[str] = []
    page.on("request", lambda r: stops.append(r.url) if r.url.endswith("/stop-generating") else None)
    choose(page, "test/slow")
    send(page, "a long answer, please")
    expect(page.get_by_role("article", name="Assistant")).to_contain_text("word3")
    first = shown_id(page)
    nav = page.get_by_role("navigation", name="Conversations")
    row = nav.get_by_role("listitem").filter(has=page.locator(f'a[href="/conversation/{first}"]'))

    page.get_by_role("button", name="New chat").click()
    expect(page.get_by_role("article")).to_have_count(0)
    expect(row.get_by_role("img", name="Answering")).to_be_visible()  # the sidebar says it goes on
    choose(page, "test/echo")
    send(page, "meanwhile, here")  # a second conversation, answered while the first one runs
    expect(wait_answer(page)).to_contain_text("meanwhile, here")
    assert shown_id(page) != first

    row.get_by_role("link").click()
    answer = page.get_by_role("article", name="Assistant")
    expect(answer.locator(".body")).to_contain_text("word0 word1 word2 word3")  # back on screen
    wait_until(lambda: stored(page, first)["messages"][1]["status"] != "generating", timeout=60)
    saved = stored(page, first)["messages"]
    assert [m["role"] for m in saved] == ["user", "assistant"]
    assert (saved[1]["status"], saved[1]["interruption"]) == ("done", None)
    assert saved[1]["content"] == SLOW_ANSWER  # all of it: never stopped
    expect(answer.locator(".body")).to_have_text(SLOW_ANSWER)
    expect(answer).not_to_have_attribute("aria-busy", "true")
    expect(page.get_by_role("article", name="You")).to_have_count(1)
    expect(nav.get_by_role("img", name="Answering")).to_have_count(0)
    assert stops == [] and v.watcher.errors == []


# 2. Settings of a conversation ----------------------------------------------------------------------------


def test_settings_are_stored_with_the_conversation_and_sent_with_its_messages(page_server: Served, visit: Any) -> None:
    v = visit(page_server.url)
    page = v.page
    choose(page, "test/echo")
    button = page.get_by_role("button", name="Settings")
    expect(button).to_be_disabled()  # a new chat has no conversation to keep them yet
    send(page, "first")
    wait_answer(page)
    conversation = shown_id(page)
    button.click()
    dialog = page.get_by_role("dialog", name="Conversation settings")
    expect(dialog.get_by_label("Temperature")).to_have_value("")  # the model's default
    dialog.get_by_label("Temperature").fill("0.3")
    dialog.get_by_label("Longest answer (tokens)").fill("50")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    assert stored(page, conversation)["settings"] == {"temperature": 0.3, "max_new_tokens": 50}

    page.reload()
    page.wait_for_selector("body[data-ready]")
    button.click()
    expect(dialog.get_by_label("Temperature")).to_have_value("0.3")
    expect(dialog.get_by_label("Longest answer (tokens)")).to_have_value("50")
    dialog.get_by_role("button", name="Cancel").click()
    sent = sent_messages(page)
    send(page, "second")
    wait_answer(page)
    page.get_by_role("button", name="New chat").click()  # another conversation: not these settings
    send(page, "third")
    wait_answer(page)
    assert [(to, body["inputs"]) for to, body in sent] == [(conversation, "second"), (shown_id(page), "third")]
    assert sent[0][1]["parameters"] == {"temperature": 0.3, "max_new_tokens": 50, "details": True}
    assert sent[1][1]["parameters"] == {"details": True}
    assert v.watcher.errors == []


# 3. The server away, and back ----------------------------------------------------------------------------


def test_one_banner_while_the_server_is_away_gone_once_it_is_back(served: Served, visit: Any) -> None:
    page = visit(served.url).page
    choose(page, "test/echo")
    send(page, "hello")
    wait_answer(page)
    conversation = shown_id(page)
    nav = page.get_by_role("navigation", name="Conversations")
    expect(nav.get_by_role("link")).not_to_have_text("New Chat")  # named: nothing more under way

    served.stop()
    send(page, "are you there?")
    expect(page.locator("article.user.unsent")).to_have_count(1)
    send(page, "are you there?")  # the text came back to the box: the same again
    expect(page.locator("article.user.unsent")).to_have_count(2)
    page.get_by_role("searchbox", name="Search conversations").fill("hello")
    alerts = page.get_by_role("alert")
    expect(alerts).to_have_count(1)  # one, however many requests failed
    expect(alerts).to_contain_text("The server cannot be reached")
    # While it is away, the conversation changes on the server; coming back brings the sidebar up to date.
    database = served.args[served.args.index("--db") + 1]
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("UPDATE conversations SET title = 'Renamed while away' WHERE id = ?", (conversation,))

    served.start()  # the same port and database
    expect(alerts).to_have_count(0, timeout=20_000)  # by itself: the page checked again
    expect(nav.get_by_role("link", name="Renamed while away")).to_be_visible()
    send(page, "and now?")
    expect(wait_answer(page)).to_contain_text("and now?")
