"""Moving a history to another device in Chromium (issue 23): chat in one browser context, get a code,
enter it (through its link) in a second context, see the same conversations there, then detach the
second from the first and see the second lose access."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser import ARTIFACTS, Served, wait_answer
from tests.test_page_a11y import serious


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    wait_answer(page)


def devices_dialog(page: Page) -> Any:
    page.get_by_role("button", name="Use this history on another device").click()
    dialog = page.get_by_role("dialog", name="Use this history on another device")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("textbox", name="Code")).to_have_value(re.compile(r"^[2-9A-Z]{4}-[2-9A-Z]{4}$"))
    return dialog


def test_a_history_moves_with_a_code_and_leaves_when_detached(page_server: Served, visit: Any) -> None:
    first = visit(page_server.url)
    send(first.page, "Remember the tulips")
    dialog = devices_dialog(first.page)
    code = dialog.get_by_role("textbox", name="Code").input_value()
    link = dialog.get_by_role("textbox", name="Link").input_value()
    assert link == f"{page_server.url}/link?code={code}"
    expect(dialog.get_by_role("status")).to_contain_text(re.compile(r"The code works once, for (10:00|9:\d\d) more"))
    expect(dialog.get_by_role("button", name="Detach this browser")).to_have_count(1)
    found = serious(first.page, "devices dialog")
    ARTIFACTS.mkdir(exist_ok=True)
    first.page.screenshot(path=ARTIFACTS / "devices-dialog.png")
    dialog.get_by_role("button", name="Close").click()

    # The second browser: a fresh visitor at the welcome gate, who opens the code's link.
    second = visit(page_server.url, accept=False)
    second.page.goto(link)
    linking = second.page.get_by_role("dialog", name="Continue a history from another device")
    expect(linking).to_be_visible()
    expect(linking.get_by_role("textbox", name="Code")).to_have_value(code)
    found += serious(second.page, "link dialog")
    assert found == []
    linking.get_by_role("button", name="Link this browser").click()
    second.page.wait_for_url(re.compile(r"/$"))
    second.page.wait_for_selector("body[data-ready]")
    expect(second.page.locator("dialog#welcome")).not_to_be_visible()  # the history's own gate was passed
    expect(second.page.locator("li.conversation")).to_have_count(1)
    second.page.locator("li.conversation").first.click()
    second.page.wait_for_url("**/conversation/*")
    conversation_id = second.page.url.rsplit("/", 1)[1]
    expect(second.page.get_by_role("article", name="You").first).to_contain_text("Remember the tulips")

    # The code was spent: the same code from a third place answers as unknown.
    third = visit(page_server.url, accept=False)
    third.page.get_by_role("button", name="Have a code from another device?").click()
    again = third.page.get_by_role("dialog", name="Continue a history from another device")
    again.get_by_role("textbox", name="Code").fill(code)
    again.get_by_role("button", name="Link this browser").click()
    expect(again.get_by_role("alert")).to_contain_text("unknown, already used, or expired")

    # The first browser sees both, and detaches the second.
    dialog = devices_dialog(first.page)
    detach = dialog.get_by_role("button", name=re.compile(r"^Detach Chrome on Linux"))
    expect(detach).to_have_count(1)
    detach.click()
    expect(dialog.get_by_role("button", name=re.compile(r"^Detach"))).to_have_count(1)
    dialog.get_by_role("button", name="Close").click()

    second.page.reload()
    second.page.wait_for_selector("body[data-ready]")
    expect(second.page.get_by_role("dialog", name="Welcome to h2ochat")).to_be_visible()  # a fresh visitor
    expect(second.page.locator("li.conversation")).to_have_count(0)
    expect(first.page.locator("li.conversation")).to_have_count(1)
    assert first.watcher.errors == [] and first.watcher.dialogs == [] and second.watcher.dialogs == []
    # The second was on the conversation's address: reloaded, that conversation is a 404 for it now.
    assert second.page.url.endswith("/conversation/" + conversation_id)
    assert second.watcher.errors == ["Failed to load resource: the server responded with a status of 404 (Not Found)"]
    assert [e for e in third.watcher.errors if "status of 404" not in e] == []
