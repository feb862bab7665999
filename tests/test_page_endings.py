"""The web page in Chromium: every ending explained, Continue, Details, and a Retry that samples (issue 26)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import Served, fixed_toml, wait_answer

WORDS = " ".join(f"w{i}" for i in range(30))
MODELS = {
    "test/limit": ("Limited model", {"text": WORDS, "parameters": {"max_new_tokens": 5, "do_sample": False}}),
    "test/broken": ("Broken model", {"text": WORDS, "fail_after": 0}),
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    config = tmp_path / "models.toml"
    config.write_text(fixed_toml(MODELS), encoding="utf-8")
    server = Served(["--config", str(config), "--db", str(tmp_path / "chat.db")]).start()
    yield server
    server.stop()


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def stored(page: Page) -> list[dict[str, Any]]:
    response = page.request.get("/api/conversation/" + page.url.rsplit("/", 1)[1])
    return [m for m in response.json()["messages"] if m["role"] != "system"]  # the tree's root: never shown


def test_the_token_limit_is_said_and_continue_goes_on(served: Served, visit: Any) -> None:
    page = visit(served.url).page
    send(page, "Go on and on.")
    answer = wait_answer(page)
    ending = answer.locator(".note.ending")
    expect(ending).to_have_text("Reached the 5-token limit. Continue")

    answer.get_by_role("button", name="Details").click()
    expect(answer.locator(".details")).to_contain_text("5 tokens")
    expect(answer.locator(".details")).to_contain_text("reached the token limit")
    expect(answer.get_by_role("button", name="Details")).to_have_attribute("aria-expanded", "true")

    answer.get_by_role("button", name="Continue").click()
    expect(ending).to_have_text("Reached the 10-token limit. Continue")
    messages = stored(page)
    assert len(messages) == 2 and messages[1]["generatedTokens"] == 10
    expect(answer.locator(".body")).to_have_text(messages[1]["content"].strip())

    page.reload()  # the stored answer says the same
    expect(page.locator("article.assistant .note.ending")).to_have_text("Reached the 10-token limit. Continue")


def test_retry_samples_when_the_model_is_greedy(served: Served, visit: Any) -> None:
    page = visit(served.url).page
    send(page, "Tell me.")
    answer = wait_answer(page)
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data or "{}")) if r.method == "POST" else None)
    answer.get_by_role("button", name="Retry").click()
    wait_answer(page)
    retry = next(body for body in bodies if body.get("options", {}).get("is_retry"))
    assert retry["parameters"]["do_sample"] is True and retry["parameters"]["temperature"] == 0.7


def test_a_failure_before_any_text_does_not_speak_of_text_above(served: Served, visit: Any) -> None:
    page = visit(served.url).page
    page.get_by_label("Model").select_option("test/broken")
    send(page, "Hello?")
    note = page.locator("article.assistant .note.error")
    expect(note).to_be_visible()
    assert "text above" not in note.inner_text()
    assert note.inner_text().rstrip().endswith(".")


def test_renaming_the_open_conversation_renames_the_tab_and_the_exports(served: Served, visit: Any) -> None:
    page = visit(served.url).page
    send(page, "Tell me.")
    wait_answer(page)
    nav = page.get_by_role("navigation", name="Conversations")
    expect(nav.get_by_role("link").first).not_to_have_text("New Chat")  # the model's title came
    nav.get_by_role("listitem").first.get_by_role("button", name="Rename").click()
    title = nav.get_by_role("textbox", name="Title")
    title.fill("My trip")
    title.press("Enter")
    expect(page).to_have_title("My trip · h2ochat")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export Markdown").click()
    assert download.value.suggested_filename == "My trip.md"


def test_a_first_message_without_an_answer_names_the_conversation_by_its_words(served: Served, visit: Any) -> None:
    page = visit(served.url).page
    page.get_by_label("Model").select_option("test/broken")
    send(page, "Where do **rivers** begin?")
    expect(page.locator("article.assistant .note.error")).to_be_visible()
    nav = page.get_by_role("navigation", name="Conversations")
    expect(nav.get_by_role("link").first).to_have_text("Where do rivers begin?")
