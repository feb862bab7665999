"""The web page in Chromium on a conversation that is a tree (issue 20): edit a question, regenerate and
walk the versions, the branch kept across a reload and a second tab, delete a branch, the system prompt
sent to the model, votes, and the exports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser import FIXED_MODELS, Served, fixed_toml, wait_answer
from tests.test_page_a11y import serious

DEFAULT_PROMPT = "You are the test model."


@pytest.fixture(scope="module")
def tree_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The page's fixed models, and one that answers with the prompt it was sent (echo_prompt)."""
    directory = tmp_path_factory.mktemp("tree")
    models = {**FIXED_MODELS, "test/prompt": ("Prompt model", {"echo_prompt": True, "delay": 0.002})}
    # The model's own system prompt belongs to the model, above its parameters and endpoint.
    text = fixed_toml(models).replace(
        'display_name = "Prompt model"', f'display_name = "Prompt model"\npreprompt = "{DEFAULT_PROMPT}"'
    )
    (directory / "models.toml").write_text(text, encoding="utf-8")
    served = Served(["--config", str(directory / "models.toml"), "--db", str(directory / "tree.db")]).start()
    yield served
    served.stop()


def send(page: Page, text: str) -> Locator:
    """Send `text` and wait for its answer."""
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    return wait_answer(page)


def choose(page: Page, model: str) -> None:
    page.get_by_label("Model").select_option(model)


def stored(page: Page) -> dict[str, Any]:
    """The conversation on screen as the server keeps it, read with the page's own cookie."""
    page.wait_for_url("**/conversation/*")
    response = page.request.get(f"/api/conversation/{page.url.rsplit('/', 1)[1]}")
    assert response.ok, response.text()
    return dict(response.json())


def of_role(conversation: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [m for m in conversation["messages"] if m["role"] == role]


def version(article: Locator) -> Locator:
    return article.get_by_role("group", name="Versions").locator(".version-count")


def reopen(page: Page) -> None:
    page.reload()
    page.wait_for_selector("body[data-ready]")


def test_editing_a_question_makes_a_new_branch_and_keeps_the_old(tree_server: Served, visit: Any) -> None:
    v = visit(tree_server.url)
    page = v.page
    choose(page, "test/echo")
    send(page, "the first question")
    question = page.get_by_role("article", name="You")
    question.get_by_role("button", name="Edit").click()
    box = question.get_by_role("textbox", name="Edit message")
    expect(box).to_have_value("the first question")
    box.fill("changed my mind")
    question.get_by_role("button", name="Cancel").click()  # nothing sent, nothing changed
    expect(question.locator(".body")).to_have_text("the first question")
    expect(question.get_by_role("group", name="Versions")).to_be_hidden()

    question.get_by_role("button", name="Edit").click()
    question.get_by_role("textbox", name="Edit message").fill("the second question")
    question.get_by_role("button", name="Save and send").click()
    expect(wait_answer(page)).to_contain_text("the second question")
    expect(page.get_by_role("article")).to_have_count(2)  # the branch shown: the edited one alone
    question = page.get_by_role("article", name="You")
    expect(question.locator(".body")).to_have_text("the second question")
    expect(version(question)).to_have_text("2/2")
    tree = stored(page)
    assert [m["content"] for m in of_role(tree, "user")] == ["the first question", "the second question"]
    assert [m["parentId"] for m in of_role(tree, "user")] == [tree["rootMessageId"]] * 2

    question.get_by_role("button", name="Previous version").click()  # the old branch, with its answer
    expect(version(question)).to_have_text("1/2")
    expect(question.locator(".body")).to_have_text("the first question")
    expect(page.get_by_role("article", name="Assistant")).to_contain_text("the first question")
    assert v.watcher.errors == [] and v.watcher.dialogs == []


def test_regenerated_answers_are_versions_and_the_branch_holds_across_reload_and_tabs(
    tree_server: Served, visit: Any
) -> None:
    v = visit(tree_server.url)
    page = v.page
    choose(page, "test/echo")
    send(page, "say it three times")
    for _ in range(2):
        page.get_by_role("button", name="Retry").click()
        wait_answer(page)
    answer = page.get_by_role("article", name="Assistant")
    expect(answer).to_have_count(1)
    expect(version(answer)).to_have_text("3/3")
    tree = stored(page)
    ids = [m["id"] for m in of_role(tree, "assistant")]
    assert len(ids) == 3 and of_role(tree, "user")[0]["children"] == ids
    expect(answer).to_have_attribute("data-id", ids[2])

    previous = answer.get_by_role("button", name="Previous version")
    following = answer.get_by_role("button", name="Next version")
    expect(following).to_be_disabled()
    previous.click()
    expect(version(answer)).to_have_text("2/3")
    expect(answer).to_have_attribute("data-id", ids[1])
    previous.click()
    expect(version(answer)).to_have_text("1/3")
    expect(answer).to_have_attribute("data-id", ids[0])
    expect(previous).to_be_disabled()
    expect(following).to_be_focused()  # the keyboard stays on the versions
    following.click()
    expect(version(answer)).to_have_text("2/3")
    assert stored(page)["activeMessageId"] == ids[1]

    reopen(page)  # the same branch: the middle version
    expect(version(answer)).to_have_text("2/3")
    expect(answer).to_have_attribute("data-id", ids[1])
    second = page.context.new_page()  # another tab of the same browser
    second.goto(page.url)
    second.wait_for_selector("body[data-ready]")
    other = second.get_by_role("article", name="Assistant")
    expect(version(other)).to_have_text("2/3")
    expect(other).to_have_attribute("data-id", ids[1])
    assert v.watcher.errors == []


def test_deleting_a_message_removes_it_and_what_follows(tree_server: Served, visit: Any) -> None:
    v = visit(tree_server.url)
    page = v.page
    choose(page, "test/echo")
    send(page, "keep this")
    send(page, "drop this")
    send(page, "and this")
    dropped = page.get_by_role("article", name="You").nth(1)
    dialog = page.get_by_role("dialog", name="Delete this message?")
    dropped.get_by_role("button", name="Delete message").click()
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("article")).to_have_count(6)  # a no keeps it

    dropped.get_by_role("button", name="Delete message").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("article")).to_have_count(2)
    expect(page.get_by_role("article", name="You").locator(".body")).to_have_text("keep this")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    assert [m["content"] for m in of_role(stored(page), "user")] == ["keep this"]

    # An answer with two versions: deleting the one shown shows the other.
    page.get_by_role("button", name="Retry").click()
    answer = wait_answer(page)
    expect(version(answer)).to_have_text("2/2")
    answer.get_by_role("button", name="Delete message").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(page.get_by_role("article")).to_have_count(2)
    expect(answer.get_by_role("group", name="Versions")).to_be_hidden()
    assert len(of_role(stored(page), "assistant")) == 1
    reopen(page)
    expect(page.get_by_role("article")).to_have_count(2)
    assert v.watcher.errors == [] and v.watcher.dialogs == []


def test_the_system_prompt_is_sent_to_the_model_and_kept_with_the_conversation(tree_server: Served, visit: Any) -> None:
    v = visit(tree_server.url)
    page = v.page
    choose(page, "test/prompt")
    button = page.get_by_role("button", name="System prompt")
    dialog = page.get_by_role("dialog", name="System prompt")
    box = dialog.get_by_role("textbox", name="System prompt")
    button.click()
    expect(box).to_have_value(DEFAULT_PROMPT)  # a new chat starts with the model's
    box.fill("Answer like a pirate.")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    answer = send(page, "hello")
    assert stored(page)["preprompt"] == "Answer like a pirate."
    expect(answer).to_contain_text("system: Answer like a pirate.")
    assert of_role(stored(page), "assistant")[0]["content"].splitlines() == [
        "system: Answer like a pirate.",
        "user: hello",
    ]

    reopen(page)
    button.click()
    expect(box).to_have_value("Answer like a pirate.")
    box.fill("Be brief.")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    assert stored(page)["preprompt"] == "Be brief."
    expect(send(page, "again")).to_contain_text("system: Be brief.")  # from the next answer on

    page.get_by_role("button", name="New chat").click()
    button.click()
    expect(box).to_have_value(DEFAULT_PROMPT)  # the next new chat: the model's again
    dialog.get_by_role("button", name="Cancel").click()
    expect(send(page, "fresh")).to_contain_text(f"system: {DEFAULT_PROMPT}")
    assert v.watcher.errors == []


def test_votes_are_pressed_buttons_that_survive_a_reload(tree_server: Served, visit: Any) -> None:
    v = visit(tree_server.url)
    page = v.page
    answer = send(page, "rate me")
    good, bad = answer.get_by_role("button", name="Good answer"), answer.get_by_role("button", name="Bad answer")
    expect(good).to_have_attribute("aria-pressed", "false")
    good.click()
    expect(good).to_have_attribute("aria-pressed", "true")
    reopen(page)
    expect(good).to_have_attribute("aria-pressed", "true")
    assert of_role(stored(page), "assistant")[0]["score"] == 1
    bad.click()
    expect(bad).to_have_attribute("aria-pressed", "true")
    expect(good).to_have_attribute("aria-pressed", "false")
    reopen(page)
    expect(bad).to_have_attribute("aria-pressed", "true")
    bad.click()  # pressed again: no vote
    expect(bad).to_have_attribute("aria-pressed", "false")
    reopen(page)
    expect(bad).to_have_attribute("aria-pressed", "false")
    assert of_role(stored(page), "assistant")[0]["score"] == 0
    assert v.watcher.errors == []


def test_export_json_holds_the_whole_tree_and_markdown_the_branch(tree_server: Served, visit: Any) -> None:
    page = visit(tree_server.url).page
    choose(page, "test/echo")
    send(page, "alpha")
    question = page.get_by_role("article", name="You")
    question.get_by_role("button", name="Edit").click()
    question.get_by_role("textbox", name="Edit message").fill("beta")
    question.get_by_role("button", name="Save and send").click()
    wait_answer(page).get_by_role("button", name="Good answer").click()
    expect(page.get_by_role("button", name="Good answer")).to_have_attribute("aria-pressed", "true")
    tree = stored(page)

    with page.expect_download() as download:
        page.get_by_role("button", name="Export JSON").click()
    exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert (exported["rootMessageId"], exported["activeMessageId"]) == (tree["rootMessageId"], tree["activeMessageId"])
    assert exported["preprompt"] == tree["preprompt"]
    server = {m["id"]: m for m in tree["messages"] if m["role"] != "system"}
    assert [m["id"] for m in exported["messages"]] == list(server)  # every version, the root left out
    for message in exported["messages"]:
        kept = server[message["id"]]
        for key in ("role", "content", "parentId", "ancestors", "children"):
            assert message[key] == kept[key], key
        assert message["score"] == kept.get("score", 0)
    assert sorted(m["content"] for m in exported["messages"] if m["role"] == "user") == ["alpha", "beta"]

    with page.expect_download() as download:
        page.get_by_role("button", name="Export Markdown").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert "## You\n\nbeta" in text and "alpha" not in text  # the branch on screen only


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_nothing_serious_in_versions_the_editor_and_the_dialogs(
    scheme: str, tree_server: Served, visit: Any
) -> None:
    page = visit(tree_server.url, color_scheme=scheme, reduced_motion="reduce").page
    send(page, "versions")
    page.get_by_role("button", name="Retry").click()
    expect(version(wait_answer(page))).to_have_text("2/2")
    page.get_by_role("button", name="Good answer").click()
    found = serious(page, "versions and votes")
    question = page.get_by_role("article", name="You")
    question.get_by_role("button", name="Edit").click()
    found += serious(page, "editing")
    question.get_by_role("button", name="Cancel").click()
    question.get_by_role("button", name="Delete message").click()
    found += serious(page, "delete a message")
    page.get_by_role("dialog", name="Delete this message?").get_by_role("button", name="Cancel").click()
    page.get_by_role("button", name="System prompt").click()
    found += serious(page, "system prompt")
    assert found == [], "\n".join(found)
