"""The web page in Chromium: every response read to its end, and the embedded model's suggestions."""

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


def test_every_response_is_read_rename_delete_stop_and_the_welcome(page_server: Served, visit: Any) -> None:
    v = visit(page_server.url, accept=False)
    page = v.page
    failed: list[str] = []

    def record(request: Request) -> None:
        failed.append(f"{request.method} {request.url}: {request.failure}")

    page.on("requestfailed", record)
    page.get_by_role("button", name="Start chatting").click()
    send(page, "one whole answer")
    wait_answer(page)
    page.get_by_label("Model").select_option("test/slow")
    send(page, "one to stop")
    with page.expect_response("**/stop-generating"):
        page.get_by_role("button", name="Stop generating").click()
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
