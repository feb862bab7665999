"""The web page's server side over real HTTP: security and cache headers, the size budget, search, --open.

The page's behaviour in a browser is in test_page_browser.py and test_page_stream.py.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from msgspec.structs import replace

from h2ochat.server import ModelConfig, start_server
from h2ochat.server.config import FixedEndpoint, PromptExample
from h2ochat.server.web.page import static_files
from tests.helpers import FIXED_MODEL, RawClient, fixed_config

Client = Callable[[str], RawClient]


@pytest.mark.parametrize("path", ["/", "/conversation/0123456789abcdef01234567", "/static/app.js"])
async def test_page_responses_carry_the_security_headers(path: str, raw_client: Client) -> None:
    async with start_server(fixed_config()) as server:
        status, _, response = await raw_client(server.url).request("GET", path)
    assert status == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


async def test_the_page_has_no_inline_script_style_or_handler() -> None:
    from h2ochat.server.web.page import STATIC

    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert not [word for word in html.split() if word.lower().startswith("on") and "=" in word]
    for script in STATIC.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        assert "innerHTML" not in text and "eval(" not in text, script.name  # model text: textContent or DOMPurify


def test_every_module_is_preloaded() -> None:
    """The HTML names every module, so the browser fetches them at once rather than import level by level."""
    from h2ochat.server.web.page import STATIC

    html = (STATIC / "index.html").read_text(encoding="utf-8")
    # Relative: under the page's <base href>, the server's base path.
    modules = [f"static/{p.relative_to(STATIC).as_posix()}" for p in STATIC.rglob("*.*js") if p.is_file()]
    # shared.js: the entry of a shared conversation's page (shared.html), not of this one.
    entries = ("static/app.js", "static/shared.js")
    missing = [m for m in modules if m not in entries and f'<link rel="modulepreload" href="{m}">' not in html]
    assert len(modules) == 29 and missing == []  # app.js, its 24 modules (with keys.js), shared.js, 3 libraries


async def test_static_files_revalidate_with_etag_and_come_gzipped(raw_client: Client) -> None:
    async with start_server(fixed_config()) as server:
        client = raw_client(server.url)
        status, body, response = await client.request("GET", "/static/app.css")
        assert status == 200 and b"--accent" in body
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["Content-Type"].startswith("text/css")
        etag = response.headers["ETag"]
        status, body, _ = await client.request("GET", "/static/app.css", headers={"If-None-Match": etag})
        assert status == 304 and body == b""
        status, _, response = await client.request("GET", "/static/vendor/dompurify/purify.es.mjs")
        assert status == 200 and response.headers["Content-Type"].startswith("text/javascript")
        assert response.headers["Content-Encoding"] == "gzip"  # aiohttp's client decoded it
        status, body, _ = await client.request("GET", "/static/vendor/marked/LICENSE")
        assert status == 404 and "No such file" in body["message"]
        assert (await client.request("GET", "/static/../page.py"))[0] == 404


def test_the_whole_page_stays_under_250_kb_gzipped() -> None:
    files = static_files()
    assert {"app.js", "vendor/marked/marked.esm.js", "vendor/highlight.js/highlight.min.js"} <= set(files)
    total = sum(len(file.gzipped) for file in files.values())
    assert total < 250 * 1024, f"{total} bytes"
    assert all(gzip.decompress(file.gzipped) == file.body for file in files.values())


def test_vendored_libraries_have_version_and_licence() -> None:
    from h2ochat.server.web.page import STATIC

    for name in ("marked", "dompurify", "highlight.js"):
        folder = STATIC / "vendor" / name
        assert (folder / "LICENSE").stat().st_size > 500
        assert "registry.npmjs.org" in (folder / "VERSION").read_text(encoding="utf-8")


async def test_search_finds_conversations_by_title_and_message_text(raw_client: Client) -> None:
    async with start_server(fixed_config(echo=True)) as server:
        alice, mallory = raw_client(server.url), raw_client(server.url)
        for client in (alice, mallory):
            await client.accept()
        first, second, third = [await alice.create() for _ in range(3)]
        await alice.message(first, "Tell me about penguins in Antarctica")
        await alice.message(second, "Something else entirely")
        await alice.request("PATCH", f"/conversation/{second}", json={"title": "Penguin facts"})
        await alice.message(third, "100% sure? a_b")
        await mallory.message(await mallory.create(), "penguins too")

        async def search(client: RawClient, query: str) -> list[str]:
            status, found, _ = await client.request("GET", "/api/conversations", params={"q": query})
            assert status == 200
            return [conversation["id"] for conversation in found]

        assert await search(alice, "PENGUIN") == [second, first]  # title and message, newest first
        assert await search(alice, "antarctica") == [first]
        assert await search(alice, "100%") == [third] and await search(alice, "a_b") == [third]
        assert await search(alice, "%") == [third] and await search(alice, "_") == [third]  # not wildcards
        assert await search(alice, "walrus") == []
        assert len(await search(mallory, "penguin")) == 1  # only its own
        assert len(await search(alice, "  ")) == 3  # a blank query lists everything


async def test_models_list_their_prompt_examples(raw_client: Client) -> None:
    example = PromptExample(title="Capital", prompt="What is the capital of France?")
    model = ModelConfig(name=FIXED_MODEL, endpoints=[FixedEndpoint()], prompt_examples=[example])
    config = replace(fixed_config(), models=[model])
    async with start_server(config) as server:
        _, models, _ = await raw_client(server.url).request("GET", "/api/models")
    assert models[0]["promptExamples"] == [{"title": "Capital", "prompt": "What is the capital of France?"}]


def test_serve_prints_the_address_and_open_opens_it(tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    fake_browser = tmp_path / "browser.py"
    fake_browser.write_text(f"import sys; open({str(opened)!r}, 'w').write(sys.argv[1])\n", encoding="utf-8")
    env = {**os.environ, "BROWSER": f"{sys.executable} {fake_browser} %s", "COLUMNS": "300"}
    config = tmp_path / "fixed.toml"
    config.write_text('[[models]]\nname = "m"\n[[models.endpoints]]\ntype = "fixed"\n', encoding="utf-8")
    command = ["serve", "--port", "0", "--db", ":memory:", "--config", str(config), "--open"]
    process = subprocess.Popen(
        [sys.executable, "-m", "h2ochat", *command],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stderr is not None
        lines = []  # "Loading", a log line, "serving ...", then the page's address
        while not any("Chat in a web browser" in line for line in lines) and len(lines) < 10:
            lines.append(process.stderr.readline())
        deadline = time.monotonic() + 20
        while not opened.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=20)
        process.stderr.close()  # type: ignore[union-attr]
    url = opened.read_text(encoding="utf-8")
    assert url.startswith("http://127.0.0.1:") and url.endswith("/")
    assert f"Chat in a web browser: {url}" in "".join(lines)
