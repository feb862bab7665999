"""Sharing in Chromium (issue 23): share a conversation, open the link in a fresh browser context (no
cookie) and read it, continue it there, then revoke it and see the 404.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser, Page, expect

from tests.browser import ARTIFACTS, Served, Watcher, wait_answer
from tests.test_page_a11y import serious


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    wait_answer(page)


def open_link(browser: Browser) -> tuple[Page, Watcher, Any]:
    """The link in a context of its own: no cookie, as someone it was sent to."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    watcher = Watcher(page)
    return page, watcher, context


def test_a_shared_link_is_read_continued_and_revoked(browser: Browser, page_server: Served, visit: Any) -> None:
    owner = visit(page_server.url, permissions=["clipboard-read", "clipboard-write"])
    page = owner.page
    send(page, "Show me <b>Markdown</b>, please")
    share = page.get_by_role("button", name="Share", exact=True)
    expect(share).to_be_enabled()
    share.click()
    dialog = page.get_by_role("dialog", name="Share this conversation")
    expect(dialog).to_be_visible()
    link = dialog.get_by_role("textbox", name="Link")
    page.wait_for_function("() => document.querySelector('#share-link').value.includes('/r/')")
    url = link.input_value()
    expect(dialog.get_by_role("status")).to_have_text("Link copied.")
    assert page.evaluate("navigator.clipboard.readText()") == url
    found = serious(page, "share dialog")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "share-dialog.png")
    # Sharing again, unchanged, gives the same link; another expiry, another one.
    dialog.get_by_label("The link works").select_option("7")
    page.wait_for_function(
        "(old) => document.querySelector('#share-link').value.includes('/r/') && "
        "document.querySelector('#share-link').value !== old",
        arg=url,
    )
    dialog.get_by_role("button", name="Done").click()

    reader_page, reader_watcher, context = open_link(browser)
    try:
        response = reader_page.goto(url)
        assert response is not None and response.status == 200
        reader_page.wait_for_selector("body[data-ready]")
        assert context.cookies() == []  # reading needs no session and makes none
        expect(reader_page.locator("dialog#welcome")).to_have_count(0)  # no welcome gate to read
        question = reader_page.get_by_role("article", name="User")
        expect(question).to_have_text("UserShow me <b>Markdown</b>, please")  # the person's text, as text
        answer = reader_page.get_by_role("article", name="Assistant")
        expect(answer.locator("strong")).to_have_text("Markdown")  # rendered as on the chat page
        expect(answer.locator("table td").first).to_have_text("Paris")
        expect(answer.locator("code.language-python")).to_contain_text("return 42")
        expect(answer.get_by_role("link", name="the docs")).to_have_attribute("rel", "noopener")
        expect(reader_page.locator("#about")).to_contain_text("Model: test/markdown")
        expect(reader_page.locator('meta[name="robots"]')).to_have_attribute("content", "noindex")
        found += serious(reader_page, "shared page")
        reader_page.screenshot(path=ARTIFACTS / "share-page.png", full_page=True)

        # Continue: a session is started for the reader, and the copy opens in the chat page.
        reader_page.get_by_role("button", name="Continue this conversation").click()
        reader_page.wait_for_url("**/conversation/*")
        reader_page.wait_for_selector("body[data-ready]")
        assert any(cookie["name"] == "hf-chat" for cookie in context.cookies())
        reader_page.get_by_role("button", name="Start chatting").click()  # the reader's own gate, to write
        reader_page.wait_for_selector("#welcome:not([open])", state="attached")
        expect(reader_page.get_by_role("article", name="You").first).to_contain_text("Show me <b>Markdown</b>, please")
        send(reader_page, "And one more thing")
        expect(reader_page.get_by_role("article", name="Assistant")).to_have_count(2)
        assert reader_watcher.errors == []
    finally:
        context.close()

    # Deleting the conversation says that its links stay, and they do.
    page.locator("li.conversation").first.get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog", name="Delete this conversation?")
    expect(confirm).to_contain_text("Links shared from it keep working until you revoke them under Shared links.")
    confirm.get_by_role("button", name="Delete").click()
    expect(page.locator("li.conversation")).to_have_count(0)

    # The owner's shared links: both, one revoked; its page is then the same 404 as an unknown id.
    page.get_by_role("button", name="Shared links").click()
    links = page.get_by_role("dialog", name="Shared links")
    revokes = links.get_by_role("button", name="Revoke the link to")
    expect(revokes).to_have_count(2)
    found += serious(page, "shared links dialog")
    page.screenshot(path=ARTIFACTS / "share-links.png")
    assert found == []
    revokes.first.click()
    expect(revokes).to_have_count(1)
    expect(links.get_by_role("button", name="Revoke the link to").first).to_be_focused()
    revokes.first.click()
    expect(revokes).to_have_count(0)
    expect(links.get_by_text("No conversation has been shared from this browser.")).to_be_visible()
    links.get_by_role("button", name="Close").click()

    reader_page, reader_watcher, context = open_link(browser)
    try:
        response = reader_page.goto(url)
        assert response is not None and response.status == 404
        expect(reader_page.get_by_role("heading", name="Shared conversation not found")).to_be_visible()
        revoked = response.text()
        unknown = reader_page.goto(f"{page_server.url}/r/{'A' * 22}")
        assert unknown is not None and unknown.status == 404
        assert unknown.text() == revoked
        # Chromium logs each 404 page it loads; nothing else may go wrong (a CSP refusal, a script error).
        assert [e for e in reader_watcher.errors if "status of 404" not in e] == []
    finally:
        context.close()
    assert owner.watcher.errors == [] and owner.watcher.dialogs == []
