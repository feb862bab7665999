"""What the web page's browser tests share: a real ``h2ochat serve`` process and Debian's Chromium.

Chromium is driven by Playwright's Python package (Playwright's own browser
download is not reachable from the machines this is built on). Without
/usr/bin/chromium the browser tests skip on a developer machine and fail in
CI (the ``CI`` variable set), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from bench.page import ARGS, CHROMIUM  # the same Chromium, launched the same way

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Dialog, Locator, Page

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "FIXED_MODELS",
    "Served",
    "Watcher",
    "browser_or_skip",
    "fixed_toml",
    "launch",
    "wait_answer",
    "wait_until",
]

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

MARKDOWN_ANSWER = (
    "Here is **Markdown**:\n\n```python\ndef answer():\n    return 42\n```\n\n"
    "| city | country |\n|---|---|\n| Paris | France |\n\n- first\n- second\n\n"
    "See [the docs](https://example.com/docs)."
)
SLOW_ANSWER = " ".join(f"word{i}" for i in range(400))


def long_answer(tokens: int) -> str:
    """About ``tokens`` words of Markdown (paragraphs, lists, code), one token per word in the fixed backend."""
    block = (
        "A paragraph with **bold** and `code` words that goes on for a while so that lines wrap. "
        "\n\n- an item\n- another item with a [link](https://example.com)\n\n"
        "```js\nconst x = 1; // a comment\nfunction f(a, b) { return a + b; }\n```\n\n"
    )
    words = len(block.split())
    return block * (tokens // words + 1)


# Models of the module-wide server: name -> (display name, endpoint settings)
FIXED_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "test/markdown": ("Markdown model", {"text": MARKDOWN_ANSWER, "delay": 0.002}),
    "test/echo": ("Echo model", {"echo": True, "delay": 0.002}),
    "test/slow": ("Slow model", {"text": SLOW_ANSWER, "delay": 0.03}),
    "test/failing": ("Failing model", {"text": SLOW_ANSWER, "delay": 0.01, "fail_after": 5}),
}


def fixed_toml(models: dict[str, tuple[str, dict[str, Any]]] = FIXED_MODELS, **server: Any) -> str:
    """A configuration file for the fixed backend; the first model gets example prompts."""
    server = {"max_new_tokens_limit": 20000, **server}  # the models ask for up to 20,000 tokens
    lines = ["[server]", *(f"{key} = {_toml(value)}" for key, value in server.items())]
    for index, (name, (display, endpoint)) in enumerate(models.items()):
        lines += ["", "[[models]]", f"name = {_toml(name)}", f"display_name = {_toml(display)}"]
        lines.append(f"description = {_toml('The ' + display.lower() + ' of the tests.')}")
        if index == 0:
            lines.append(
                'prompt_examples = [{title = "Capital of France", prompt = "What is the capital of France?"}, '
                '{title = "Write a poem", prompt = "Write a poem about the sea."}]'
            )
        endpoint = dict(endpoint)
        parameters = {"max_new_tokens": 20000, **endpoint.pop("parameters", {})}  # "parameters": the model's
        lines += ["[models.parameters]", *(f"{key} = {_toml(value)}" for key, value in parameters.items())]
        lines += ["[[models.endpoints]]", 'type = "fixed"']
        lines += [f"{key} = {_toml(value)}" for key, value in endpoint.items()]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@dataclass
class Served:
    """``h2ochat serve`` in a subprocess; it can be killed and started again on the same port and database."""

    args: list[str]
    url: str = ""
    process: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)

    def start(self) -> Served:
        port = ["--port", str(urllib.parse.urlsplit(self.url).port)] if self.url else ["--port", "0"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "h2ochat", "serve", *port, *self.args], stderr=subprocess.PIPE, text=True, env=env
        )
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            match = re.search(r"serving (http://\S+)", line)
            if match:
                self.url = match.group(1)
                break
        else:
            raise RuntimeError("h2ochat serve exited before serving:\n" + "".join(self.log))
        # Keep reading its log, or the server would block once the pipe is full.
        threading.Thread(target=self._drain, args=(self.process,), daemon=True).start()
        return self

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.log.append(line)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


def browser_or_skip() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; CI installs it with apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")


@contextlib.contextmanager
def launch() -> Iterator[Browser]:
    """Chromium, headless, through Playwright."""
    browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Watcher:
    """What a page did that it must not: console errors, uncaught exceptions, dialogs (alert, confirm)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda message: self._console(message))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("dialog", lambda dialog: self._dialog(dialog))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


def wait_answer(page: Page, timeout: float = 30_000) -> Locator:
    """The last answer, once it has finished streaming."""
    answer = page.get_by_role("article", name="Assistant").last
    answer.wait_for()
    page.wait_for_function(
        "() => { const a = [...document.querySelectorAll('article.assistant')].pop(); "
        "return a && a.getAttribute('aria-busy') === 'false'; }",
        timeout=timeout,
    )
    return answer


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.05)


# Fixtures (imported by conftest.py) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium per test module; each test gets a fresh context (its own cookie, so its own session).

    Per module, not per run: Playwright's synchronous API keeps an event loop running while it is
    open, and the asyncio tests of other modules need none to be.
    """
    with launch() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``h2ochat serve`` with the fixed models of FIXED_MODELS and the welcome gate on, for a test module."""
    directory = tmp_path_factory.mktemp("page")
    config = directory / "models.toml"
    config.write_text(fixed_toml(), encoding="utf-8")
    served = Served(["--config", str(config), "--db", str(directory / "page.db")]).start()
    yield served
    served.stop()


@dataclass
class Visit:
    """A page in a fresh browser context (its own cookie), and what it did wrong."""

    page: Page
    watcher: Watcher


@pytest.fixture
def visit(browser: Browser) -> Iterator[Any]:
    """``visit(url, path="/", accept=True, width=1280, **context options)``: open the page, ready to chat."""
    contexts = []

    def open_page(url: str, path: str = "/", *, accept: bool = True, width: int = 1280, **options: Any) -> Visit:
        context = browser.new_context(base_url=url, viewport={"width": width, "height": 800}, **options)
        contexts.append(context)
        page = context.new_page()
        watcher = Watcher(page)
        page.goto(path)
        page.wait_for_selector("body[data-ready]")
        if accept:
            page.get_by_role("button", name="Start chatting").click()
            page.wait_for_selector("#welcome:not([open])", state="attached")
        return Visit(page, watcher)

    yield open_page
    for context in contexts:
        context.close()
