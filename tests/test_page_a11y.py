"""The web page in Chromium, for everyone: axe-core finds nothing serious, contrast of controls and icons,
what a screen reader is told, the phone's drawer, focus after a delete, the page's h1, the skip link.

Keyboard shortcuts and the requests the page reads are in test_page_keys.py; phones in test_page_phone.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import Served, wait_answer


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def serious(page: Page, where: str) -> list[str]:
    """axe-core's serious and critical violations on the page as it is now, each with where it was found."""
    from axe_playwright_python.sync_playwright import Axe

    found = []
    for violation in Axe().run(page).response["violations"]:
        if violation["impact"] in ("serious", "critical"):
            nodes = violation["nodes"]
            targets = [node["target"] for node in nodes[:5]]
            found.append(f"{where}: {violation['id']} at {targets}: {nodes[0]['failureSummary']}")
    return found


# The contrast of what is not text (WCAG 1.4.11: 3:1), and of icon glyphs and action labels, as
# painted: an element's colour is blended with what is behind it by the opacities above it.
CONTRAST = """
([selector, part]) => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const ratio = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const behind = (e) => {
    for (; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  const opacity = (e) => {
    let o = 1;
    for (; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
    return o;
  };
  const shown = [...document.querySelectorAll(selector)].filter((e) => e.checkVisibility({ visibilityProperty: true }));
  return shown.map((e) => {
    const style = part === "track" ? getComputedStyle(e, "::after") : getComputedStyle(e);
    const colour = rgb(part === "text" ? style.color : style.borderTopColor);
    const around = part === "text" ? behind(e) : behind(e.parentElement);
    const a = opacity(e);
    const painted = colour.slice(0, 3).map((c, i) => c * a + around[i] * (1 - a));
    const name = e.id || e.getAttribute("aria-label") || e.textContent.trim();
    return [name, Math.round(ratio(painted, around) * 100) / 100];
  });
}
"""


def contrast(page: Page, selector: str, part: str) -> list[tuple[str, float]]:
    return [tuple(pair) for pair in page.evaluate(CONTRAST, [selector, part])]


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 360])
def test_axe_finds_nothing_serious_anywhere(scheme: str, width: int, page_server: Served, visit: Any) -> None:
    v = visit(page_server.url, accept=False, width=width, color_scheme=scheme, reduced_motion="reduce")
    page = v.page
    found = serious(page, "welcome dialog")
    page.get_by_role("button", name="Start chatting").click()
    page.wait_for_selector("#welcome:not([open])", state="attached")  # accepted: sending works from here
    found += serious(page, "empty page")
    send(page, "Show me some Markdown")  # code, a table, a list, a link
    wait_answer(page)
    page.get_by_label("Model").select_option("test/slow")
    send(page, "and now a long one")
    page.get_by_role("button", name="Stop generating").click()
    wait_answer(page)
    page.get_by_role("article", name="Assistant").last.get_by_role("button", name="Details").click()
    found += serious(page, "conversation")
    if width < 400:
        page.get_by_role("button", name="More").click()
        found += serious(page, "More menu")
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Show conversations").click()
        found += serious(page, "drawer")
    page.get_by_role("navigation", name="Conversations").get_by_role("button", name="Delete").first.click()
    found += serious(page, "delete confirmation")
    page.get_by_role("button", name="Cancel").click()
    page.keyboard.press("Escape")
    page.keyboard.press("Control+/")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    found += serious(page, "shortcuts dialog")
    assert found == [], "\n".join(found)
    assert v.watcher.errors == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 360])
def test_controls_icons_and_actions_stand_out(scheme: str, width: int, page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=width, color_scheme=scheme, reduced_motion="reduce").page
    send(page, "contrast")
    wait_answer(page)
    if width < 400:
        page.get_by_role("button", name="Show conversations").click()  # the sidebar is in the drawer
    page.locator("#theme").click()  # the switch's other state too
    boundaries = contrast(page, "#search, #model, .composer-box", "border")
    tracks = contrast(page, "button.switch", "track")
    page.locator("#theme").click()
    tracks += contrast(page, "button.switch", "track")
    icons = contrast(page, "#menu, #new-chat-top, #more, #close-drawer, li.conversation button", "text")
    actions = contrast(page, ".message .actions button, .topbar-actions button:enabled, .sidebar-bottom button", "text")
    assert [pair for pair in boundaries + tracks + icons if pair[1] < 3] == []
    assert [pair for pair in icons + actions if pair[1] < 4.5] == []
    assert len(boundaries) == 3 and len(tracks) == 2 and len(icons) >= 2 and len(actions) >= 5


def test_a_screen_reader_hears_when_an_answer_is_ready_or_stopped(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    status = page.locator("#announce")
    expect(status).to_have_attribute("aria-live", "polite")
    expect(status).to_have_attribute("role", "status")
    send(page, "an answer please")
    wait_answer(page)
    expect(status).to_have_text("Answer ready")
    page.get_by_label("Model").select_option("test/slow")
    send(page, "a long one")
    expect(status).to_have_text("")  # said once, not again while the next one streams
    page.get_by_role("button", name="Stop generating").click()
    wait_answer(page)
    expect(status).to_have_text("Answer stopped")


def test_escape_closes_the_phone_drawer_and_the_page_behind_is_inert(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=360, reduced_motion="reduce").page
    send(page, "drawer")
    wait_answer(page)
    menu = page.get_by_role("button", name="Show conversations")
    nav = page.get_by_role("navigation", name="Conversations")
    behind = "() => [document.querySelector('main').inert, document.querySelector('.skip-link').inert]"
    assert page.evaluate(behind) == [False, False]
    menu.click()
    expect(nav).to_be_visible()
    assert page.evaluate(behind) == [True, True]
    assert page.evaluate("document.getElementById('message').focus(), document.activeElement.id") != "message"
    # Tab once around the drawer, past its last control (the browser's own chrome) and back to its close
    # button: nothing behind it takes the focus on the way.
    for _ in range(40):
        page.keyboard.press("Tab")
        assert page.evaluate("() => !document.querySelector('main').contains(document.activeElement)")
        if page.evaluate("document.activeElement.id") == "close-drawer":
            break
    else:
        raise AssertionError("Tab never came back to the drawer's close button")
    page.keyboard.press("Escape")
    expect(nav).to_be_hidden()
    expect(menu).to_be_focused()
    expect(menu).to_have_attribute("aria-expanded", "false")
    assert page.evaluate(behind) == [False, False]
    menu.click()
    page.get_by_role("button", name="Hide conversations").click()
    expect(nav).to_be_hidden()
    expect(menu).to_be_focused()


def test_after_a_delete_the_focus_goes_to_the_next_conversation_or_the_message_box(
    page_server: Served, visit: Any
) -> None:
    page = visit(page_server.url).page
    for title in ("First", "Second", "Third"):
        created = page.request.post("/conversation", data={"model": "test/echo"}).json()["conversationId"]
        assert page.request.patch(f"/conversation/{created}", data={"title": title}).ok
    page.reload()
    page.wait_for_selector("body[data-ready]")
    nav = page.get_by_role("navigation", name="Conversations")
    expect(nav.get_by_role("link")).to_have_text(["Third", "Second", "First"])

    def delete(title: str) -> None:
        nav.get_by_role("listitem").filter(has_text=title).get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete").click()
        expect(nav.get_by_role("link", name=title)).to_have_count(0)

    delete("Second")
    expect(nav.get_by_role("link", name="First")).to_be_focused()  # the one that took its place
    delete("First")
    expect(nav.get_by_role("link", name="Third")).to_be_focused()  # the last one: the one before it
    page.get_by_role("link", name="Third").click()
    expect(page).to_have_url(page_server.url + "/conversation/" + page.url.rsplit("/", 1)[1])
    delete("Third")  # the conversation on screen, and the last in the list
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    expect(page).to_have_url(page_server.url + "/")


def test_on_a_phone_deleting_the_open_conversation_focuses_the_message_box(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=360, reduced_motion="reduce").page
    send(page, "to be deleted")
    wait_answer(page)
    page.get_by_role("button", name="Show conversations").click()
    page.get_by_role("navigation", name="Conversations").get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("navigation", name="Conversations")).to_be_hidden()
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()


def test_the_conversation_title_is_the_page_heading(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text("New chat")
    send(page, "a heading please")
    wait_answer(page)
    nav = page.get_by_role("navigation", name="Conversations")
    expect(nav.get_by_role("link")).not_to_have_text("New Chat")  # named by the model
    expect(heading).to_have_text(nav.get_by_role("link").inner_text())
    nav.get_by_role("button", name="Rename").click()
    page.keyboard.press("Control+A")
    page.keyboard.type("My own title")
    page.keyboard.press("Enter")
    expect(heading).to_have_text("My own title")
    expect(nav.get_by_role("link", name="My own title")).to_be_focused()  # back where the rename began
    page.reload()
    page.wait_for_selector("body[data-ready]")
    expect(heading).to_have_text("My own title")
    expect(heading).to_have_count(1)


def test_a_skip_link_to_the_message_box_comes_first(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    send(page, "skip")
    wait_answer(page)
    address = page.url
    page.get_by_role("button", name="New chat").focus()
    page.keyboard.press("Shift+Tab")
    skip = page.get_by_role("link", name="Skip to message box")
    expect(skip).to_be_focused()
    page.keyboard.press("Shift+Tab")  # out of the page: nothing comes before it
    assert page.evaluate("document.activeElement === document.body")
    page.keyboard.press("Tab")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    assert page.url == address  # no #fragment: the address names the conversation
    expect(skip).not_to_be_in_viewport()  # shown only while focused
