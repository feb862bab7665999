"""The web page in Chromium: keyboard shortcuts and their dialog, every response read to its end,
and the embedded model's suggestions for a new chat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, expect

from h2ochat.server.config import default_models
from tests.browser import Served, wait_answer


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def test_the_shortcuts_dialog_opens_by_button_question_mark_and_ctrl_slash(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    page.get_by_role("button", name="Keyboard shortcuts").click()
    expect(dialog).to_be_visible()
    for what, keys in (
        ("New chat", "Ctrl + Shift + O"),
        ("Focus the message box", "Shift + Esc"),
        ("Stop generating", "Esc"),
        ("Copy the last answer", "Ctrl + Shift + C"),
        ("Show these shortcuts", "? or Ctrl + /"),
    ):
        expect(dialog.get_by_role("row", name=what)).to_contain_text(keys)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    box = page.get_by_role("textbox", name="Message")
    box.press("?")  # in the message box "?" is a question mark
    expect(box).to_have_value("?")
    expect(dialog).to_be_hidden()
    box.press("Control+/")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Dark theme").focus()
    page.keyboard.press("?")
    expect(dialog).to_be_visible()


def test_ctrl_shift_o_starts_a_new_chat_and_shift_escape_focuses_the_message_box(
    page_server: Served, visit: Any
) -> None:
    page = visit(page_server.url).page
    send(page, "first conversation")
    wait_answer(page)
    assert "/conversation/" in page.url
    box = page.get_by_role("textbox", name="Message")
    page.get_by_role("button", name="Copy").first.focus()
    page.keyboard.press("Control+Shift+O")
    expect(page).to_have_url(page_server.url + "/")
    expect(page.get_by_role("article")).to_have_count(0)
    expect(box).to_be_focused()
    page.get_by_role("button", name="Dark theme").focus()
    page.keyboard.press("Shift+Escape")
    expect(box).to_be_focused()


def test_escape_stops_the_answer_unless_a_dialog_is_open(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    page.get_by_label("Model").select_option("test/slow")
    send(page, "a long answer")
    stop = page.get_by_role("button", name="Stop generating")
    expect(stop).to_be_visible()
    page.keyboard.press("Control+/")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # closes the dialog, and only that
    expect(dialog).to_be_hidden()
    answer = page.get_by_role("article", name="Assistant")
    expect(answer).to_contain_text("word20")  # still streaming
    expect(stop).to_be_visible()
    page.keyboard.press("Escape")
    wait_answer(page)
    expect(answer.locator(".note.ending")).to_have_text("Stopped: you stopped this answer before it was complete.")
    stored = page.request.get("/api/conversation/" + page.url.rsplit("/", 1)[1]).json()
    assert stored["messages"][-1]["status"] == "interrupted"


def test_ctrl_shift_c_copies_the_last_answer(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, permissions=["clipboard-read", "clipboard-write"]).page
    page.get_by_label("Model").select_option("test/echo")
    send(page, "the first answer")
    wait_answer(page)
    send(page, "the last answer, with *Markdown*")
    wait_answer(page)
    page.keyboard.press("Control+Shift+C")
    expect(page.locator("#announce")).to_have_text("Copied the last answer")
    assert page.evaluate("navigator.clipboard.readText()") == "the last answer, with *Markdown*"


def test_every_response_is_read_rename_delete_stop_settings_and_the_welcome(page_server: Served, visit: Any) -> None:
    v = visit(page_server.url, accept=False)
    page = v.page
    failed: list[str] = []

    def record(request: Request) -> None:
        failed.append(f"{request.method} {request.url}: {request.failure}")

    page.on("requestfailed", record)
    page.get_by_role("button", name="Start chatting").click()
    page.wait_for_selector("#welcome:not([open])", state="attached")  # accepted: sending works from here
    send(page, "one whole answer")
    wait_answer(page)
    page.get_by_label("Model").select_option("test/slow")
    send(page, "one to stop")
    with page.expect_response("**/stop-generating"):
        page.get_by_role("button", name="Stop generating").click()
    page.get_by_role("button", name="Settings").click()
    with page.expect_response(lambda response: response.request.method == "PATCH"):
        page.get_by_role("dialog", name="Conversation settings").get_by_role("button", name="Save").click()
    nav = page.get_by_role("navigation", name="Conversations")
    # Both are named before the rename and delete below, which would otherwise refuse the names (404).
    expect(nav.get_by_role("link", name="New Chat")).to_have_count(0, timeout=30_000)
    nav.get_by_role("button", name="Rename").first.click()
    page.keyboard.type("Renamed")
    with page.expect_response(lambda response: response.request.method == "PATCH"):
        page.keyboard.press("Enter")
    nav.get_by_role("button", name="Delete").first.click()
    with page.expect_response(lambda response: response.request.method == "DELETE"):
        page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(nav.get_by_role("link")).to_have_count(1)
    page.wait_for_load_state("networkidle")
    assert failed == []
    assert v.watcher.errors == []


def test_the_embedded_model_offers_suggestions_it_answers_well() -> None:
    examples = default_models()[0].prompt_examples
    assert 2 <= len(examples) <= 3
    assert all(example.title and example.prompt.endswith((".", "?")) for example in examples)


@pytest.mark.model
def test_a_new_chat_on_the_default_server_shows_the_suggestions(tmp_path: Path, visit: Any) -> None:
    served = Served(["--db", str(tmp_path / "smol.db")]).start()
    try:
        page = visit(served.url).page
        examples = page.locator("#examples").get_by_role("button")
        expect(examples).to_have_count(len(default_models()[0].prompt_examples))
        page.get_by_role("button", name="Capital of France").click()
        answer = wait_answer(page, timeout=120_000)
        expect(answer.locator(".body")).to_contain_text("Paris")
    finally:
        served.stop()
