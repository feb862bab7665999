"""``base_path`` (``--base-path``): every route under a prefix, as chat-ui's APP_BASE; real HTTP over loopback.

The page under a prefix in a browser: test_page_base_path.py.
"""

from __future__ import annotations

import html.parser
import json
import re
import subprocess
import sys
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace
from yarl import URL

from h2ochat import H2oSession
from h2ochat.protocol.chatui import StreamUpdate
from h2ochat.server import RunningServer, load_config, start_server
from h2ochat.server.config import ConfigError, ServerConfig
from reliability.process import write_config
from tests.chatui_current import Current, updates
from tests.helpers import FIXED_MODEL, RawClient, branch, events, fixed_config

Client = Callable[[str], RawClient]
ANSWER = "Served from under a prefix."


def prefixed(base: str = "/chat", **settings: Any) -> ServerConfig:
    return replace(fixed_config(text=ANSWER), base_path=base, **settings)


def origin(url: str) -> str:
    """``http://127.0.0.1:port`` of a server URL that may carry a path."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
async def chat_server() -> AsyncIterator[RunningServer]:
    async with start_server(prefixed()) as server:
        yield server


# Where things are ------------------------------------------------------------------------------------


async def test_the_server_url_names_the_prefix_and_every_route_lives_under_it(chat_server: RunningServer) -> None:
    assert chat_server.url == origin(chat_server.url) + "/chat"
    paths = [resource.canonical for resource in chat_server.app.router.resources()]
    assert paths and all(path == "/chat" or path.startswith("/chat/") for path in paths), paths
    assert {"/chat", "/chat/", "/chat/api/models", "/chat/v1/models", "/chat/generate"} <= set(paths)


async def test_the_2023_chat_flow_under_chat(chat_server: RunningServer, raw_client: Client) -> None:
    client = raw_client(chat_server.url)  # http://127.0.0.1:port/chat: every path below is under it
    await client.accept()
    conversation = await client.create()
    status, raw, _ = await client.message(conversation, "Hello?")
    assert status == 200 and events(raw)[-1]["generated_text"] == ANSWER
    status, listed, _ = await client.request("GET", "/api/conversations")
    assert status == 200 and [item["id"] for item in listed] == [conversation]
    status, read, _ = await client.request("GET", f"/api/conversation/{conversation}")
    assert status == 200 and [m["content"] for m in branch(read)] == ["Hello?", ANSWER]
    status, _, _ = await client.request("DELETE", f"/conversation/{conversation}")
    assert status == 200
    assert (await client.request("GET", "/api/conversations"))[1] == []


async def test_todays_chat_ui_protocol_under_chat(chat_server: RunningServer) -> None:
    """The current generation's routes get the prefix with no work of their own (app.ROUTE_TABLES)."""
    client = Current(chat_server.url)
    try:
        await client.start()  # POST /chat/api/v2/user/settings: a session, as today's page starts one
        jar = client.http.cookie_jar
        assert "hf-chat" in jar.filter_cookies(URL(chat_server.url + "/"))
        assert "hf-chat" not in jar.filter_cookies(URL(origin(chat_server.url) + "/"))  # Path=/chat
        status, body, _ = await client.request("GET", "/api/v2/models")
        assert status == 200 and FIXED_MODEL in json.dumps(body)
        conversation, root = await client.create()
        got = updates(await client.send(conversation, root, "Hi"))
        assert "".join(u.token for u in got if isinstance(u, StreamUpdate)) == ANSWER
        stored = await client.read(conversation)
        assert [m["content"] for m in stored["messages"][1:]] == ["Hi", ANSWER]
        cross = {"Origin": "http://evil.example"}  # the Origin rule for multipart, under the prefix too
        status, _, _ = await client.request("POST", f"/conversation/{conversation}", data=b"x", headers=cross)
        assert status == 403
    finally:
        await client.close()


async def test_the_h2ochat_client_chats_given_the_prefixed_url(chat_server: RunningServer) -> None:
    async with H2oSession(chat_server.url) as session:
        assert await session.ask([{"role": "user", "content": "Hi"}], FIXED_MODEL) == ANSWER


async def test_the_welcome_gate_holds_under_the_prefix(chat_server: RunningServer, raw_client: Client) -> None:
    """The session middleware singles out routes by path: with the prefix, still."""
    client = raw_client(chat_server.url)
    conversation = await client.create()  # a write under /chat: a session is started for it
    assert "; Path=/chat; " in (await client.request("GET", "/api/models"))[2].headers.get("Set-Cookie", "")
    status, body, _ = await client.message(conversation, "Hello?")  # 2023's message: gated
    assert status == 405 and body == {"error": "You need to accept the welcome modal first"}


async def test_v1_and_tgi_under_the_prefix(raw_client: Client) -> None:
    async with start_server(prefixed(api_key="sesame")) as server:
        client = raw_client(server.url)
        status, body, _ = await client.request("GET", "/v1/models")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"  # the key guards /chat/v1
        key = {"Authorization": "Bearer sesame"}
        status, body, _ = await client.request("GET", "/v1/models", headers=key)
        assert status == 200 and [model["id"] for model in body["data"]] == [FIXED_MODEL]
        chat = {"model": FIXED_MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        status, body, _ = await client.request("POST", "/v1/chat/completions", json=chat, headers=key)
        assert status == 200 and body["choices"][0]["message"]["content"] == ANSWER
        status, body, _ = await client.request("GET", "/v1/nowhere", headers=key)
        assert status == 404 and "/chat/v1/nowhere" in body["error"]["message"]  # OpenAI's shape, as without
        for path in ("", "/", "/generate"):  # the TGI client posts to its base URL itself
            status, body, _ = await client.request("POST", path, json={"inputs": "Hi"})
            assert status == 200 and body in ([{"generated_text": ANSWER}], {"generated_text": ANSWER}), path


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/"), ("GET", "/api/models"), ("GET", "/v1/models"), ("GET", "/chatter"), ("POST", "/conversation")],
)
async def test_outside_the_prefix_is_a_404_that_says_where_the_app_is(
    chat_server: RunningServer, raw_client: Client, method: str, path: str
) -> None:
    client = raw_client(origin(chat_server.url))
    status, body, response = await client.request(method, path, json={"model": FIXED_MODEL})
    assert status == 404
    assert body["message"].startswith(f"No such endpoint: {method} {path};")
    assert "under /chat" in body["message"] and "/chat/" in body["message"]
    assert "Set-Cookie" not in response.headers  # no session is started for it


async def test_the_session_cookie_path_is_the_prefix(chat_server: RunningServer, raw_client: Client) -> None:
    client = raw_client(chat_server.url)
    status, _, response = await client.request(
        "POST", "/settings", data={"ethicsModalAccepted": "true", "activeModel": FIXED_MODEL}
    )
    assert status == 200
    cookie = response.headers["Set-Cookie"]
    assert re.fullmatch(r"hf-chat=[A-Za-z0-9_-]{43}; Path=/chat; Max-Age=2592000; HttpOnly; SameSite=Lax", cookie)
    assert await client.create()  # the cookie comes back under /chat: the gate passed is this session's


async def test_without_a_prefix_the_cookie_path_is_the_root(raw_client: Client) -> None:
    async with start_server(prefixed("/")) as server:
        assert server.url == origin(server.url)
        _, _, response = await raw_client(server.url).request("POST", "/settings", data={"ethicsModalAccepted": "1"})
        assert "; Path=/; " in response.headers["Set-Cookie"]


# Cross-site checks with a prefix ---------------------------------------------------------------------


async def test_referer_and_origin_checks_hold_under_the_prefix(chat_server: RunningServer, raw_client: Client) -> None:
    client = raw_client(chat_server.url)
    form = {"ethicsModalAccepted": "true"}
    site = origin(chat_server.url)
    refused = [
        {"Referer": ""},  # none: chat-ui's "need to have a referer"
        {"Referer": "http://evil.example/chat/"},
        {"Referer": site.replace("127.0.0.1", "localhost") + "/chat/"},  # another origin, same prefix
        {"Origin": "http://evil.example", "Referer": site + "/chat/"},
    ]
    for headers in refused:
        status, _, _ = await client.request("POST", "/settings", data=form, headers=headers)
        assert status == 403, headers
    status, body, _ = await client.request("POST", "/settings", data=form, headers={"Referer": site + "/chat/"})
    assert status == 200 and body["location"] == site + "/chat/"
    # No Referer (a browser's Referrer-Policy may drop it): the same-origin Origin suffices, and the
    # redirect back goes to the page under the prefix, not to the host's root.
    headers = {"Referer": "", "Origin": site, "Accept": "text/html"}
    status, _, response = await client.request("POST", "/settings", data=form, headers=headers)
    assert status == 303 and response.headers["Location"] == "/chat/"


# The page ------------------------------------------------------------------------------------------


class _Addresses(html.parser.HTMLParser):
    """Every href and src of a page, and its <base href>."""

    def __init__(self) -> None:
        super().__init__()
        self.base: str | None = None
        self.addresses: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "base":
            self.base = values.get("href")
        elif tag in ("link", "script") and (values.get("href") or values.get("src")):
            self.addresses.append(values.get("href") or values.get("src") or "")


@pytest.mark.parametrize("page", ["", "/", "/conversation/0123456789abcdef01234567"])
async def test_the_page_and_every_asset_it_names_are_under_the_prefix(
    chat_server: RunningServer, raw_client: Client, page: str
) -> None:
    client = raw_client(chat_server.url)
    status, body, response = await client.request("GET", page)
    assert status == 200 and response.content_type == "text/html"
    assert "base-uri 'self'" in response.headers["Content-Security-Policy"]
    parsed = _Addresses()
    parsed.feed(body.decode())
    assert parsed.base == "/chat/"
    assert len(parsed.addresses) == 31  # the icon, two style sheets (shared.css: sharing), 27 preloaded modules, app.js
    for address in parsed.addresses:
        absolute = urllib.parse.urljoin(chat_server.url + page, urllib.parse.urljoin(parsed.base, address))
        assert absolute.startswith(chat_server.url + "/static/"), address
        status, _, _ = await raw_client(absolute).request("GET", "")
        assert status == 200, absolute


async def test_the_page_scripts_name_no_address_from_the_host_root() -> None:
    """An address starting with "/" would skip the <base href>: the page would leave the prefix."""
    from h2ochat.server.web.page import STATIC

    root = re.compile(r"""(?:fetch\(|pushState\(null, "", |href = |\bpath: )["'`]/(?!/)""")
    for script in STATIC.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        assert not root.search(text), script.name
        assert not re.search(r"""["'`]/(api|conversation|settings|static)\b""", text), script.name


# Validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, kept", [("/chat", "/chat"), ("/chat/", "/chat"), ("/apps/chat", "/apps/chat"), ("/", ""), ("", "")]
)
def test_a_base_path_is_normalised(given: str, kept: str) -> None:
    assert load_config(None, base_path=given).base_path == kept


@pytest.mark.parametrize(
    "given, says",
    [
        ("chat", "must start with '/'"),
        ("/chat/../admin", "'..'"),
        ("/chat?x=1", "no empty parts, query"),
        ("/chat#top", "fragment"),
        ("/a//b", "no empty parts"),
        ("/my%20chat", "%-escapes"),
        ("/my chat", "spaces"),
    ],
)
def test_a_bad_base_path_is_refused_saying_why(given: str, says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)) as caught:
        load_config(None, base_path=given)
    assert repr(given) in str(caught.value)


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "h2ochat", "serve", "--port", "0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_h2ochat_serve_refuses_a_bad_base_path_from_the_command_line(tmp_path: Path) -> None:
    config = write_config(tmp_path / "fixed.toml", tmp_path / "fixed.db")
    done = _serve("--config", str(config), "--base-path", "chat")
    assert done.returncode == 1 and "base_path 'chat' must start with '/'" in done.stderr, done.stderr


def test_h2ochat_serve_refuses_a_bad_base_path_from_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "fixed.toml", tmp_path / "fixed.db", server={"base_path": "/chat/../x"})
    done = _serve("--config", str(config))
    assert done.returncode == 1 and str(config) in done.stderr and "'..'" in done.stderr, done.stderr
