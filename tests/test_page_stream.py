"""The web page in Chromium, part 2: reading, control, trouble, safety, screenshots, the real model.

Part 1 (test_page_browser.py) covers the welcome gate, conversations, models, writing and comfort.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import ARTIFACTS, Served, fixed_toml, long_answer, wait_answer

# Installed before the page's own scripts: long main-thread tasks, and the token-to-paint trace.
OBSERVE = """
window.longTasks = [];
window.h2ochatTrace = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.longTasks.push(entry.duration);
}).observe({ type: "longtask", buffered: false });
"""

# A message post (not the title request the page sends after a first answer, which may come later).
MESSAGE_URL = re.compile(r"/conversation/[0-9a-f]{24}$")


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")


def choose(page: Page, model: str) -> None:
    page.get_by_label("Model").select_option(model)


def stored(page: Page) -> dict[str, Any]:
    """The conversation on screen, as the server saved it (with the page's own cookie), its messages
    without the tree's system root (issue 20), which the page never shows."""
    response = page.request.get("/api/conversation/" + page.url.rsplit("/", 1)[1])
    assert response.ok
    data = dict(response.json())
    data["messages"] = [m for m in data["messages"] if m["role"] != "system"]
    return data


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    """``server(**[server] settings)``: a fresh ``h2ochat serve`` with the fixed models and a database file."""
    started: list[Served] = []

    def start(models: Any = None, **settings: Any) -> Served:
        config = tmp_path / f"models{len(started)}.toml"
        config.write_text(fixed_toml(**({"models": models} if models else {}), **settings), encoding="utf-8")
        served = Served(["--config", str(config), "--db", str(tmp_path / f"chat{len(started)}.db")]).start()
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


# 5. Reading --------------------------------------------------------------------------------------------------


def test_tokens_appear_as_they_arrive(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    choose(page, "test/slow")
    send(page, "go")
    answer = page.get_by_role("article", name="Assistant")
    expect(answer).to_contain_text("word5")
    assert answer.get_attribute("aria-busy") == "true"
    assert "word399" not in answer.inner_text()  # shown while the answer is still being written
    expect(answer).to_contain_text("word30")
    page.get_by_role("button", name="Stop generating").click()
    wait_answer(page)


def test_markdown_code_tables_lists_and_links(page_server: Served, visit: Any) -> None:
    v = visit(page_server.url, permissions=["clipboard-read", "clipboard-write"])
    page = v.page
    send(page, "show me Markdown")
    answer = wait_answer(page)
    expect(answer.locator("strong", has_text="Markdown")).to_be_visible()
    code = answer.locator("pre code")
    expect(code.locator(".hljs-keyword").first).to_have_text("def")  # highlighted
    expect(answer.get_by_role("table")).to_contain_text("Paris")
    expect(answer.get_by_role("columnheader", name="city")).to_be_visible()
    expect(answer.get_by_role("listitem")).to_have_text(["first", "second"])
    link = answer.get_by_role("link", name="the docs")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener")
    answer.get_by_role("button", name="Copy code").click()
    assert page.evaluate("navigator.clipboard.readText()") == "def answer():\n    return 42\n"
    page.get_by_role("article", name="You").get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == "show me Markdown"
    assert v.watcher.errors == []


def test_a_10000_token_answer_streams_without_freezing_the_page(server: Any, visit: Any) -> None:
    text = long_answer(10_000)
    served = server({"test/long": ("Long model", {"text": text})})
    v = visit(served.url)
    page = v.page
    page.evaluate(OBSERVE)
    send(page, "a long one")
    answer = wait_answer(page, timeout=120_000)
    expect(answer.locator(".code-frame")).to_have_count(text.count("```js"))
    tokens = stored(page)["messages"][1]["generatedTokens"]
    long_tasks = page.evaluate("window.longTasks")
    trace = sorted(page.evaluate("window.h2ochatTrace"))
    assert tokens >= 10_000 and len(trace) >= 10_000
    assert max(long_tasks, default=0) < 200, f"main-thread tasks over 200 ms: {sorted(long_tasks)[-5:]}"
    assert v.watcher.errors == []


# 6. Control ----------------------------------------------------------------------------------------------------


def test_stop_generating_keeps_and_saves_the_partial_answer(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    choose(page, "test/slow")
    send(page, "go on")
    answer = page.get_by_role("article", name="Assistant")
    expect(answer).to_contain_text("word8")
    with page.expect_request("**/stop-generating"):
        page.get_by_role("button", name="Stop generating").click()
    wait_answer(page)
    expect(answer).to_contain_text("Stopped")
    shown = answer.locator(".body").inner_text().strip()
    saved = stored(page)["messages"][1]
    assert saved["status"] == "interrupted" and saved["content"].strip() == shown
    assert shown.startswith("word0 word1") and "word399" not in shown
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()


def test_retry_regenerates_the_last_answer(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    choose(page, "test/echo")
    send(page, "say it again")
    wait_answer(page)
    before = stored(page)["messages"]
    with page.expect_request(lambda r: r.method == "POST" and MESSAGE_URL.search(r.url)) as posted:
        page.get_by_role("button", name="Retry").click()
    body = json.loads(posted.value.post_data or "{}")
    assert body["options"]["is_retry"] is True and body["options"]["id"] == before[0]["id"]
    wait_answer(page)
    after = stored(page)["messages"]
    assert [m["role"] for m in after] == ["user", "assistant", "assistant"]  # the old answer stays (issue 20)
    assert [m["id"] for m in after[:2]] == [m["id"] for m in before] and after[2]["id"] != before[1]["id"]
    assert after[2]["content"] == "say it again" and after[0]["children"] == [before[1]["id"], after[2]["id"]]
    expect(page.get_by_role("article", name="Assistant")).to_have_count(1)


def test_double_clicking_a_prompt_example_starts_one_conversation(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    before = len(page.request.get("/api/conversations").json())  # the page's own session: none yet
    page.get_by_role("button", name="Capital of France").dblclick()
    expect(wait_answer(page)).to_contain_text("Here is Markdown")
    assert len(page.request.get("/api/conversations").json()) == before + 1
    expect(page.get_by_role("article", name="You")).to_have_count(1)
    expect(page.get_by_role("article", name="Assistant")).to_have_count(1)


def test_the_title_comes_from_summarize(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    with page.expect_response("**/summarize") as summarized:
        send(page, "name this conversation")
    title = summarized.value.json()["title"]
    assert title and title != "New Chat"
    nav = page.get_by_role("navigation", name="Conversations")
    expect(nav.get_by_role("link", name=title)).to_have_attribute("aria-current", "page")
    assert stored(page)["title"] == title


# 7. Trouble --------------------------------------------------------------------------------------------------------


def test_a_400_is_shown_with_its_message_and_the_text_comes_back(server: Any, visit: Any) -> None:
    served = server(max_new_tokens_limit=100)  # the models ask for 20,000
    page = visit(served.url).page
    send(page, "too much")
    user = page.get_by_role("article", name="You")
    expect(user.get_by_role("alert")).to_contain_text("over this server's limit of 100")
    expect(page.get_by_role("textbox", name="Message")).to_have_value("too much")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_a_429_says_when_to_try_again(server: Any, visit: Any) -> None:
    served = server(rate_limit_per_minute=1)
    page = visit(served.url).page
    send(page, "one")
    wait_answer(page)
    send(page, "two")
    expect(page.get_by_role("article", name="You").last.get_by_role("alert")).to_contain_text("try again in")
    expect(page.get_by_role("textbox", name="Message")).to_have_value("two")


def test_an_error_event_keeps_the_partial_answer(page_server: Served, visit: Any) -> None:
    page = visit(page_server.url).page
    choose(page, "test/failing")
    send(page, "fail please")
    answer = wait_answer(page)
    expect(answer.get_by_role("alert")).to_contain_text("The model failed: the fixed backend failed on purpose")
    expect(answer.locator(".body")).to_have_text("word0 word1 word2 word3 word4")
    box = page.get_by_role("textbox", name="Message")
    box.fill("still usable")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_a_lost_connection_then_a_restarted_server(server: Any, visit: Any) -> None:
    served = server()
    page = visit(served.url).page
    choose(page, "test/slow")
    send(page, "before the crash")
    answer = page.get_by_role("article", name="Assistant")
    expect(answer).to_contain_text("word5")
    served.stop(signal.SIGKILL)
    # The page waits for the answer, which a server that is only out of reach goes on writing.
    expect(answer.get_by_role("alert")).to_contain_text("connection to the server was lost")
    expect(answer.locator(".body")).to_contain_text("word0 word1")  # kept
    expect(answer).to_have_attribute("aria-busy", "true")
    served.start()  # same port, same database
    # Back: this server's start marked the answer interrupted, which the page learns by reattaching.
    expect(answer.get_by_role("alert")).to_contain_text("server stopped before the answer was complete")
    expect(answer.get_by_role("alert")).not_to_contain_text("connection to the server was lost")
    expect(answer).to_have_attribute("aria-busy", "false")
    expect(answer.locator(".body")).to_contain_text("word0 word1")
    choose(page, "test/slow")  # same model: the conversation stays
    send(page, "after the restart")
    expect(page.get_by_role("article", name="Assistant").last).to_contain_text("word3")
    page.get_by_role("button", name="Stop generating").click()
    wait_answer(page)
    messages = stored(page)["messages"]
    assert [m["status"] for m in messages] == ["done", "interrupted", "done", "interrupted"]
    assert messages[1]["interruption"] == "server stopped"


def test_reloading_during_an_answer_shows_it_interrupted_when_answers_are_not_resumable(
    server: Any, visit: Any
) -> None:
    # With resumable answers (the default) the answer goes on: test_page_reattach.py.
    page = visit(server(resumable_answers=False).url).page
    choose(page, "test/slow")
    send(page, "reload me")
    expect(page.get_by_role("article", name="Assistant")).to_contain_text("word5")
    page.reload()
    answer = page.get_by_role("article", name="Assistant")
    expect(answer).to_contain_text("Interrupted")
    expect(answer.locator(".body")).to_contain_text("word0 word1 word2")
    assert stored(page)["messages"][1]["status"] == "interrupted"


# Safety -----------------------------------------------------------------------------------------------------------

HOSTILE = (
    "<img src=x onerror=\"window.pwned=1;alert('img')\"> <script>window.pwned=2;alert('script')</script>\n\n"
    "[click me](javascript:window.pwned=3;alert('link')) <a href=\"javascript:alert('a')\">raw link</a>\n\n"
    "<svg onload=\"alert('svg')\"></svg> <iframe src=\"javascript:alert('iframe')\"></iframe> "
    '<b style="color:red" onclick="alert(\'b\')">bold</b> ![pic](https://evil.example/x.png)'
)


def test_hostile_answers_and_titles_do_nothing(page_server: Served, visit: Any) -> None:
    v = visit(page_server.url)
    page = v.page
    choose(page, "test/echo")
    send(page, HOSTILE)
    answer = wait_answer(page)
    expect(page.get_by_role("article", name="You").locator(".body")).to_have_text(HOSTILE)  # as text
    expect(answer.locator(".body")).to_contain_text("<img src=x onerror=")  # HTML from the model is shown as text
    link = answer.locator("a", has_text="click me")
    assert link.get_attribute("href") is None  # the javascript: address is gone
    link.click()
    assert answer.locator("img, script, svg, iframe, [style], [onclick]").count() == 0
    rename = page.get_by_role("button", name="Rename")
    rename.click()
    title = page.get_by_role("textbox", name="Title")
    title.fill("<img src=x onerror=alert('title')><script>alert('title')</script>")
    title.press("Enter")
    page.reload()
    page.wait_for_selector("body[data-ready]")
    expect(page.get_by_role("link", name="<img src=x onerror")).to_be_visible()
    assert page.evaluate("window.pwned") is None
    assert v.watcher.dialogs == [] and v.watcher.errors == []


# Screenshots and the real model ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 360])
def test_screenshots(scheme: str, width: int, page_server: Served, visit: Any) -> None:
    page = visit(page_server.url, width=width, color_scheme=scheme).page
    for prompt, title in (
        ("Ideas for a weekend in Lisbon?", "Weekend in Lisbon"),
        ("How do I sort a list in Python?", "Sorting a list in Python"),
        ("Show me some Markdown", "A tour of Markdown"),
    ):
        page.goto("/")  # a new chat (on a phone the button is in the folded sidebar)
        page.wait_for_selector("body[data-ready]")
        with page.expect_response("**/summarize"):  # the page names it first; the test's title comes after
            send(page, prompt)
        conversation = page.url.rsplit("/", 1)[1]
        assert page.request.patch(f"/conversation/{conversation}", data={"title": title}).ok
    page.reload()
    page.wait_for_selector("body[data-ready]")
    page.get_by_role("textbox", name="Message").fill("Can you explain the table?")
    page.mouse.move(0, 0)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"page-{'desktop' if width > 400 else 'phone'}-{scheme}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    assert page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.model
def test_the_embedded_model_end_to_end(tmp_path: Path, visit: Any) -> None:
    served = Served(["--db", str(tmp_path / "smol.db")]).start()
    try:
        page = visit(served.url).page
        expect(page.get_by_label("Model")).to_have_value("HuggingFaceTB/SmolLM2-135M-Instruct")
        send(page, "What is the capital of France?")
        answer = wait_answer(page, timeout=120_000)
        expect(answer.locator(".body")).to_contain_text("Paris")
        nav = page.get_by_role("navigation", name="Conversations")
        expect(nav.get_by_role("link").first).not_to_have_text("New Chat", timeout=60_000)
        assert stored(page)["messages"][1]["status"] == "done"
    finally:
        served.stop()
