"""Today's chat-ui clients that no one here wrote, against ``h2ochat serve --base-path /chat``.

gpt4free's ``HuggingChat`` provider (g4f, with curl_cffi) and ``hugchat`` 0.5.1 are run unchanged, pointed
at the server the way their own code allows: g4f through a subclass's ``url``/``origin``; hugchat through
a subclass whose ``hf_base_url`` is the server (see :class:`LocalChatBot`). Both are GPL/other projects'
code used as test-only peers; nothing in src/ imports them.

Where their calls cannot work against any chat-ui of today, the same call is made against the recorded
current chat-ui (tests/chatui_replay.py) to show that the failure is theirs.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from h2ochat.server import RunningServer, start_server
from h2ochat.server.inference.backends.fixed import split_words
from tests.chatui_replay import ANSWER as RECORDED_ANSWER
from tests.chatui_replay import ChatUIReplay
from tests.helpers import FIXED_MODEL, fixed_config
from tests.peer_front import PUBLIC_HOST, front

pytest.importorskip("curl_cffi", reason="g4f's HuggingChat needs curl_cffi: pip install -e '.[test]'")
g4f = pytest.importorskip("g4f", reason="gpt4free is not installed: pip install -e '.[test]'")
hugchat = pytest.importorskip("hugchat.hugchat", reason="hugchat is not installed: pip install -e '.[test]'")
from g4f.cookies import set_cookies_dir  # noqa: E402
from g4f.Provider.needs_auth.hf.HuggingChat import HuggingChat  # noqa: E402
from g4f.providers.response import FinishReason, TitleGeneration  # noqa: E402

ANSWER = "Hello there, general Kenobi."
BASE = "/chat"
PEER_TIMEOUT = 60.0  # seconds for one peer's steps; they take well under one here


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    # Served as HuggingChat is: under /chat, behind a TLS proxy answering as huggingface.co (hugchat's
    # way in, tests/peer_front.py), and on loopback directly (g4f's).
    config = msgspec.structs.replace(
        fixed_config(text=ANSWER),
        base_path=BASE,
        allowed_hosts=[PUBLIC_HOST, "127.0.0.1"],
        forwarded_allow_ips=["127.0.0.1"],
    )
    async with start_server(config) as running:
        yield running


def origin_of(server: RunningServer) -> str:
    return server.url.removesuffix(BASE)


async def read_conversation(server: RunningServer, cookie: str, conversation: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(cookies={"hf-chat": cookie}) as http,
        http.get(f"{server.url}/api/v2/conversations/{conversation}") as response,
    ):
        return response.status, await response.json()


def branch(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(from, content) along the tree from the root to its newest leaf, each a child of the one before."""
    by_id = {message["id"]: message for message in document["messages"]}
    node, path = by_id[document["rootMessageId"]], []
    while True:
        path.append((node["from"], node["content"]))
        if not node["children"]:
            return path
        parent = node["id"]
        node = by_id[node["children"][-1]]
        assert node["ancestors"][-1] == parent


# gpt4free ---------------------------------------------------------------------------------------


@pytest.fixture
def g4f_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(g4f.debug, "version_check", False)  # it asks PyPI otherwise; these machines are offline
    set_cookies_dir(str(tmp_path))
    return tmp_path


def g4f_provider(server: RunningServer) -> type[HuggingChat]:
    """What a gpt4free user writes to point the provider at another chat-ui: its class attributes."""
    origin = origin_of(server)
    # models: empty, so that the list is read from this server's /api/v2/models, not HuggingChat's.
    return type("LocalHuggingChat", (HuggingChat,), {"origin": origin, "url": origin + BASE, "models": []})


async def issued_cookie(server: RunningServer) -> str:
    """A session of the server's own: any POST of the chat-ui protocol issues one, as on chat-ui."""
    async with aiohttp.ClientSession() as http, http.post(f"{server.url}/api/v2/user/settings", json={}) as response:
        assert response.status == 200
        return response.cookies["hf-chat"].value


def g4f_login(provider: type[HuggingChat], cookie: str) -> None:
    """Where g4f keeps a login: its auth cache file, in the shape its on_auth_async saves.

    Without one, the provider opens Chromium at the URL to log in (nodriver/CDP) and waits for
    HuggingChat's page to appear; h2ochat has no login, so the session cookie the server issued is
    what a HuggingChat user would copy from a logged-in browser (its hf-chat cookie)."""
    Path(provider.get_cache_file()).write_text(json.dumps({"cookies": {"hf-chat": cookie}, "impersonate": "chrome"}))


async def g4f_turn(provider: type[HuggingChat], messages: list[dict[str, str]], **options: Any) -> list[Any]:
    """One call of the provider's own API. It makes blocking curl_cffi requests inside its async
    generator, so it runs on a loop of its own in a thread, away from the server's."""

    async def collect() -> list[Any]:
        return [chunk async for chunk in provider.create_async_generator(FIXED_MODEL, messages, **options)]

    return await in_thread(asyncio.run, collect())


async def in_thread(call: Any, *args: Any) -> Any:
    """A peer's blocking calls, bounded: neither peer sets a timeout on its requests, and a test that
    hangs says nothing. (Leaving the test shuts the server, which ends a thread stuck in a read.)"""
    return await asyncio.wait_for(asyncio.to_thread(call, *args), PEER_TIMEOUT)


async def test_g4f_huggingchat_chats_two_turns_with_every_token(server: RunningServer, g4f_home: Path) -> None:
    provider = g4f_provider(server)
    cookie = await issued_cookie(server)
    g4f_login(provider, cookie)
    first = [{"role": "user", "content": "Hi"}]

    chunks = await g4f_turn(provider, first)
    conversation = chunks[0]  # g4f yields its Conversation first (return_conversation)
    ids = conversation.models[FIXED_MODEL]
    assert [c for c in chunks if isinstance(c, str)] == split_words(ANSWER)  # each token, as streamed
    assert any(isinstance(c, TitleGeneration) for c in chunks)
    assert isinstance(chunks[-1], FinishReason)

    second = [*first, {"role": "assistant", "content": ANSWER}, {"role": "user", "content": "And again?"}]
    chunks = await g4f_turn(provider, second, conversation=conversation)
    assert [c for c in chunks if isinstance(c, str)] == split_words(ANSWER)
    assert conversation.models[FIXED_MODEL]["conversationId"] == ids["conversationId"]  # the same conversation

    status, read = await read_conversation(server, cookie, ids["conversationId"])
    assert status == 200
    path = branch(read["json"])
    # The second question hangs under the first answer: g4f found it as the parent (the last message).
    assert [role for role, _ in path] == ["system", "user", "assistant", "user", "assistant"]
    assert path[2][1] == ANSWER and path[3][1] == "And again?" and path[4][1] == ANSWER


async def test_g4f_huggingchat_after_a_delete(server: RunningServer, g4f_home: Path) -> None:
    """g4f's provider has no delete; a conversation deleted elsewhere (the page, the API) is gone for it."""
    provider = g4f_provider(server)
    cookie = await issued_cookie(server)
    g4f_login(provider, cookie)
    chunks = await g4f_turn(provider, [{"role": "user", "content": "Hi"}])
    conversation = chunks[0]
    cid = conversation.models[FIXED_MODEL]["conversationId"]
    async with aiohttp.ClientSession(cookies={"hf-chat": cookie}) as http:
        origin = {"Origin": origin_of(server)}  # h2ochat asks a bodiless write for its origin
        async with http.delete(f"{server.url}/api/v2/conversations/{cid}", headers=origin) as response:
            assert response.status == 200
    with pytest.raises(Exception, match="404"):
        await g4f_turn(provider, [{"role": "user", "content": "Still there?"}], conversation=conversation)


# hugchat ----------------------------------------------------------------------------------------


class LocalChatBot(hugchat.ChatBot):  # type: ignore[misc]
    """hugchat pointed at another deployment. It sets ``self.hf_base_url = "https://huggingface.co"`` in
    ``__init__`` and uses it at once (the constructor already creates a conversation), so no argument
    or later assignment can move it: this class's property stands in its place and ignores the
    constant. Nothing else of hugchat is replaced."""

    origin = ""

    @property
    def hf_base_url(self) -> str:
        return self.origin

    @hf_base_url.setter
    def hf_base_url(self, _constant: str) -> None:
        pass


def hugchat_bot(origin: str) -> Any:
    # hugchat refuses to start without cookies; the server issues the session on the first POST
    # (creating the conversation), and hugchat's requests session keeps it.
    bot_class = type("Bot", (LocalChatBot,), {"origin": origin})
    return bot_class(cookies={})


def hugchat_chats(origin: str) -> dict[str, Any]:
    """What a hugchat user does, all of it blocking: runs in a thread."""
    bot = hugchat_bot(origin)
    conversation = bot.current_conversation
    created = [node.role for node in conversation.history]
    message = bot.chat("Hi")
    # hugchat's iterator yields one None after finalAnswer (its __next__ recursion swallows its own
    # StopIteration); every server gives it, so it is skipped here as a hugchat user must.
    tokens = [update["token"] for update in message if update is not None]
    first = message.text
    second = bot.chat("And again?").wait_until_done()
    history = [(node.role, node.content) for node in conversation.history]
    bot.delete_conversation(conversation)
    try:
        bot.get_conversation_info(conversation)
        after_delete = "still there"
    except Exception as exc:  # hugchat raises a bare Exception naming the status
        after_delete = str(exc)
    return {
        "model": bot.active_model.id,
        "created": created,
        "tokens": tokens,
        "first": first,
        "second": second,
        "history": history,
        "after_delete": after_delete,
    }


async def test_hugchat_chats_two_turns_and_deletes(server: RunningServer) -> None:
    async with front(origin_of(server)) as origin:
        seen = await in_thread(hugchat_chats, origin)
    assert seen["model"] == FIXED_MODEL  # from /chat/api/v2/models
    assert seen["created"] == ["system"]  # the root it needs as the first parent
    assert seen["tokens"] == split_words(ANSWER) and seen["first"] == ANSWER
    assert seen["second"] == ANSWER
    assert seen["history"] == [
        ("system", ""),
        ("user", "Hi"),
        ("assistant", ANSWER),
        ("user", "And again?"),
        ("assistant", ANSWER),
    ]
    assert "404" in seen["after_delete"]


def hugchat_chats_once(origin: str) -> tuple[list[str], str]:
    bot = hugchat_bot(origin)
    message = bot.chat("What is the capital of France?")
    return [update["token"] for update in message if update is not None], message.text


async def test_hugchat_chats_with_the_recorded_chat_ui() -> None:
    """The reference for the failures below: hugchat does work against a real current chat-ui."""
    replay = ChatUIReplay(base=BASE, public_origin="https://" + PUBLIC_HOST)
    async with served(replay) as origin:
        tokens, text = await in_thread(hugchat_chats_once, origin)
    assert text == RECORDED_ANSWER and "".join(tokens) == RECORDED_ANSWER


def hugchat_share_and_settings(origin: str, chat_first: bool = False) -> tuple[str, str]:
    bot = hugchat_bot(origin)
    if chat_first:  # a conversation with a message, which h2ochat can share
        bot.chat("What is the capital of France?").wait_until_done()
    outcomes = []
    for call in (bot.share_conversation, bot.set_share_conversations):
        try:
            result = call()
            outcomes.append(result if isinstance(result, str) else "ok")  # share answers the link
        except Exception as exc:
            outcomes.append(str(exc))
    return outcomes[0], outcomes[1]


async def test_hugchat_share_and_settings_fail_on_chat_ui_itself(server: RunningServer) -> None:
    """hugchat's share reads ``url`` from the answer, which chat-ui replaced by ``shareId`` in 2025-06,
    and it posts its settings as a form, which chat-ui now parses as JSON (a 500). Both fail against
    the current chat-ui, so the fault is hugchat's. On h2ochat both succeed: the share's answer carries
    ``url`` beside ``shareId`` (docs/protocol.md section 14; a conversation without a message yet is
    refused, 400), and 2023's settings form is still spoken."""
    replay = ChatUIReplay(base=BASE, public_origin="https://" + PUBLIC_HOST)
    async with served(replay) as origin:
        share, settings = await in_thread(hugchat_share_and_settings, origin)
    assert share.startswith("Unknown server response: {'shareId'")  # chat-ui answered 200
    assert settings == "Failed to set share conversation with status code: 500"
    assert ("POST", "/settings") in replay.paths()

    async with front(origin_of(server)) as origin:
        share, settings = await in_thread(hugchat_share_and_settings, origin)
        assert share == "Failed to share conversation with status code: 400"  # nothing to share yet
        assert settings == "ok"
        share, settings = await in_thread(hugchat_share_and_settings, origin, True)
    assert re.fullmatch(r"https://huggingface\.co/chat/r/[A-Za-z0-9_-]{22}", share) and settings == "ok"


@asynccontextmanager
async def served(replay: ChatUIReplay) -> AsyncIterator[str]:
    """The replayed chat-ui on loopback; its origin (its routes under replay.base)."""
    runner = web.AppRunner(replay.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
