"""The web page on a 360 px phone: touch targets, text fields iOS does not zoom into, the top bar
(menu, title, New chat, More with Settings and the exports), and screenshots: empty, the drawer, the menu, a dialog.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import ARTIFACTS, Served, wait_answer

PHONE = 360


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


# Every visible button, sidebar link and field of the page, with its size.
TARGETS = """
() => [...document.querySelectorAll("button, .sidebar a, select, input, .skip-link")]
  .filter((e) => e.checkVisibility({ visibilityProperty: true }) && !e.closest("dialog:not([open])"))
  .map((e) => { const r = e.getBoundingClientRect();
    return [e.getAttribute("aria-label") || e.textContent.trim() || e.id, Math.round(r.width), Math.round(r.height)]; })
"""


def small_targets(page: Page) -> list[Any]:
    return [target for target in page.evaluate(TARGETS) if target[1] < 44 or target[2] < 44]


def test_touch_targets_are_at_least_44_px(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=PHONE, reduced_motion="reduce").page
    send(page, "Show me some Markdown")  # a code block has a Copy button
    wait_answer(page)
    assert page.get_by_role("button", name="Copy").count() >= 2  # the answer's and the code's
    page.locator("#skip").focus()  # shown only while focused
    small = small_targets(page)
    page.locator("#skip").blur()
    page.get_by_role("button", name="Show conversations").click()
    small += small_targets(page)
    page.get_by_role("button", name="Rename").click()
    small += small_targets(page)
    assert small == []


def test_text_fields_use_16_px_text(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=PHONE, reduced_motion="reduce").page
    send(page, "sixteen")
    wait_answer(page)
    page.get_by_role("button", name="Show conversations").click()
    page.get_by_role("button", name="Rename").click()
    sizes = page.evaluate(
        "[...document.querySelectorAll('textarea, input, select')].map((e) => getComputedStyle(e).fontSize)"
    )
    # message, search, rename, model, two settings, system prompt, the share link and its expiry,
    # the import's file, the device code, its link, the code typed on another device (devices.js), web search,
    # a new API key's name and the key shown once (keys.js)
    assert len(sizes) == 16 and set(sizes) == {"16px"}


def test_the_top_bar_has_the_title_new_chat_and_more(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=PHONE, reduced_motion="reduce").page
    bar = page.locator("header.topbar")
    more = bar.get_by_role("button", name="More")
    expect(more).to_be_enabled()  # nothing to export yet, but the new chat's system prompt
    send(page, "top bar")
    wait_answer(page)
    conversation = page.url.rsplit("/", 1)[1]
    page.request.patch(f"/conversation/{conversation}", data={"title": "A title long enough to be cut short"})
    page.reload()
    page.wait_for_selector("body[data-ready]")
    title = bar.get_by_role("heading", level=1)
    expect(title).to_have_text("A title long enough to be cut short")
    new_chat = bar.get_by_role("button", name="New chat")
    controls = [bar.get_by_role("button", name="Show conversations"), title, new_chat, more]
    boxes = [control.bounding_box() for control in controls]
    assert all(box is not None for box in boxes)
    # One row, left to right, nothing overlapping, all on the screen.
    for left, right in itertools.pairwise(boxes):
        assert left["x"] + left["width"] <= right["x"]
        assert abs(left["y"] + left["height"] / 2 - right["y"] - right["height"] / 2) < 4
    assert boxes[-1]["x"] + boxes[-1]["width"] <= PHONE
    expect(page.get_by_role("button", name="Export Markdown")).to_be_hidden()  # in More

    new_chat.click()
    expect(page).to_have_url(page_server.url + "/")
    expect(title).to_have_text("New chat")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()


@pytest.mark.parametrize("kind", ["Markdown", "JSON"])
def test_the_exports_are_in_the_more_menu(kind: str, page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=PHONE, reduced_motion="reduce").page
    page.get_by_label("Model").select_option("test/echo")
    send(page, "export me")
    wait_answer(page)
    more = page.get_by_role("button", name="More")
    more.click()
    menu = page.get_by_role("menu", name="More")
    expect(more).to_have_attribute("aria-expanded", "true")
    items = menu.get_by_role("menuitem")
    expect(items).to_have_text(["Settings", "System prompt", "Share", "Export Markdown", "Export JSON"])
    expect(items.first).to_be_focused()
    page.keyboard.press("ArrowUp")  # round to the last
    expect(items.last).to_be_focused()
    page.keyboard.press("ArrowDown")  # round to the first
    expect(items.first).to_be_focused()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(more).to_be_focused()
    expect(page.get_by_role("article", name="Assistant")).to_have_attribute("aria-busy", "false")  # no stop
    more.click()
    with page.expect_download() as download:
        menu.get_by_role("menuitem", name=f"Export {kind}").click()
    expect(menu).to_be_hidden()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    if kind == "JSON":
        assert json.loads(text)["messages"][0]["content"] == "export me"
    else:
        assert "## You\n\nexport me" in text
    more.click()
    page.mouse.click(180, 400)  # anywhere else closes it
    expect(menu).to_be_hidden()


def test_the_conversation_settings_are_in_the_more_menu(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=PHONE, reduced_motion="reduce").page
    send(page, "settings on a phone")
    wait_answer(page)
    more = page.get_by_role("button", name="More")
    more.click()
    page.get_by_role("menu", name="More").get_by_role("menuitem", name="Settings").click()
    dialog = page.get_by_role("dialog", name="Conversation settings")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Temperature").fill("0.4")
    with page.expect_response(lambda response: response.request.method == "PATCH"):
        dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(more).to_be_focused()  # back where it was opened from, not lost with the hidden item
    stored = page.request.get("/api/conversation/" + page.url.rsplit("/", 1)[1]).json()
    assert stored["settings"] == {"temperature": 0.4}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_of_the_phone_drawer_menu_and_shortcuts(scheme: str, page_server: Served, visit: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = visit(page_server.url, width=PHONE, color_scheme=scheme, reduced_motion="reduce").page
    shots = {"empty": page.screenshot()}
    send(page, "Show me some Markdown")
    wait_answer(page)
    page.get_by_role("button", name="More").click()
    shots["more"] = page.screenshot()
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Show conversations").click()
    shots["drawer"] = page.screenshot()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+/")
    shots["shortcuts"] = page.screenshot()
    for name, png in shots.items():
        path = ARTIFACTS / f"phone-{name}-{scheme}.png"
        path.write_bytes(png)
        assert path.stat().st_size > 10_000
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE
