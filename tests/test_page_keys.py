"""The web page in Chromium: every response read to its end."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, Request, expect

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
