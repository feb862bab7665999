"""The web page in Chromium on the embedded model: a chat longer than the model's context (issue 26).

The page never dies of a chat's length: it says how many earlier messages the model did not see,
counts a message against the model's token limit, and gives a refused message back to the box.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import Served, wait_answer

pytestmark = pytest.mark.model
FACT = "Here is a fact about the number {n}: " + "it is a number that people write and say often. " * 24


def post_turn(page: Page, conversation: str, text: str) -> None:
    """A short exchange through the page's own cookie, as another tab of the same person would send it."""
    body = {
        "inputs": text,
        "parameters": {"max_new_tokens": 8},
        "stream": True,
        "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False},
    }
    response = page.request.post(f"/conversation/{conversation}", data=body)
    assert response.ok, response.text()


SMALL_CONTEXT = """
[[models]]
name = "HuggingFaceTB/SmolLM2-135M-Instruct"
preprompt = "You are a helpful assistant."
[models.parameters]
do_sample = false
repetition_penalty = 1.0
max_new_tokens = 512
[[models.endpoints]]
type = "llama"
n_ctx = 1024
parallel = 1
"""


def test_a_long_chat_says_what_the_model_did_not_see(tmp_path: Path, visit: Any) -> None:
    config = tmp_path / "small.toml"  # the embedded model with 1,024 tokens of context: a chat outgrows it
    config.write_text(SMALL_CONTEXT, encoding="utf-8")
    served = Served(["--config", str(config), "--db", str(tmp_path / "smol.db")]).start()
    try:
        page = visit(served.url).page
        box = page.get_by_role("textbox", name="Message")
        box.fill("Say OK.")
        box.press("Enter")
        wait_answer(page, timeout=120_000)
        conversation = page.url.rsplit("/", 1)[1]
        for n in range(4):  # about 300 tokens each: more than one answer's share holds
            post_turn(page, conversation, FACT.format(n=n))
        page.reload()
        left_out = page.locator("article.assistant .note.info", has_text="earlier messages were not sent to the model")
        expect(left_out.last).to_be_visible()

        box.fill("Say OK again.")  # the newest answer says so while it streams
        box.press("Enter")
        answer = wait_answer(page, timeout=120_000)
        expect(answer.locator(".note.info", has_text="earlier messages were not sent to the model")).to_be_visible()

        box.fill("word " * 4000)  # far past the model's 768 input tokens
        expect(page.locator("#counter")).to_have_text("About 5,000 of the 768 tokens this model reads at once")
        box.press("Enter")
        expect(page.get_by_role("alert").last).to_contain_text("this model takes about 768 at a time. Shorten it.")
        expect(box).to_have_value("word " * 4000)
    finally:
        served.stop()
