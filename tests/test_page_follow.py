"""The web page in Chromium: the view follows a growing answer while the reader is at the bottom (issue 26).

Scrolling up lets go of the answer and shows "Jump to latest"; the button brings the reader back
and the view follows again; a conversation opens on its newest message.
"""

from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser import Served, wait_answer, wait_until

DISTANCE = "(c => c.scrollHeight - c.scrollTop - c.clientHeight)(document.getElementById('chat'))"


def distance(page: Page) -> float:
    return float(page.evaluate(DISTANCE))


def answer_length(page: Page) -> int:
    return int(page.evaluate("document.querySelector('article.assistant:last-of-type .body').textContent.length"))


def test_the_view_follows_the_answer_until_the_reader_scrolls_up(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=360).page  # a phone: the 400-word answer is several screens long
    page.get_by_label("Model").select_option("test/slow")
    box = page.get_by_role("textbox", name="Message")
    box.fill("Tell me everything.")
    box.press("Enter")
    jump = page.get_by_role("button", name="Jump to latest")

    overflow = "(c => c.scrollHeight - c.clientHeight)(document.getElementById('chat'))"
    wait_until(lambda: page.evaluate(overflow) > 400)
    followed = []
    for _ in range(10):  # while the answer grows past the screen
        followed.append(distance(page))
        time.sleep(0.1)
    assert max(followed) <= 50, followed
    expect(jump).to_be_hidden()

    page.locator("#chat").hover()
    page.mouse.wheel(0, -1500)  # the reader goes back up to read
    expect(jump).to_be_visible()
    away = distance(page)
    grown = answer_length(page)
    wait_until(lambda: answer_length(page) > grown + 200)
    assert distance(page) > away  # the answer grew below; the view stayed where the reader is

    jump.click()
    expect(jump).to_be_hidden()
    assert distance(page) <= 50
    time.sleep(0.5)
    assert distance(page) <= 50  # and follows again

    wait_answer(page)
    page.reload()
    page.wait_for_selector("body[data-ready]")
    expect(page.locator("article.assistant")).to_have_count(1)
    wait_until(lambda: distance(page) <= 50)  # opened on its newest message
