"""h2ochat's server against what a real current chat-ui client sent and read (tests/data/chatui-current/):
the recorded requests replayed, the answers compared in shape with the recorded ones."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from h2ochat.protocol import superjson
from h2ochat.server import RunningServer, start_server
from tests.chatui_current import updates
from tests.chatui_recording import request, response
from tests.helpers import FIXED_MODEL, fixed_config

RECORDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
async def served() -> AsyncIterator[RunningServer]:
    config = fixed_config(text="The capital of France is Paris.")
    async with start_server(config) as server:
        yield server


def _header(raw_head: bytes, name: str) -> str:
    for line in raw_head.decode().split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    raise KeyError(name)


async def test_the_recorded_client_requests_get_the_recorded_shapes(served: RunningServer) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        origin = {"Origin": served.url}
        settings = {"welcomeModalSeen": True}  # as the recorded page did first
        async with http.post(f"{served.url}/api/v2/user/settings", json=settings, headers=origin) as r:
            assert r.status == 200
        create = request("1-create")
        body = create.body.replace(RECORDED_MODEL.encode(), FIXED_MODEL.encode())
        headers = {**origin, "Content-Type": _header(create.head, "Content-Type")}
        async with http.post(f"{served.url}/conversation", data=body, headers=headers) as r:
            assert r.status == 200 and r.content_type == "application/json"
            ours = json.loads(await r.read())
        recorded = json.loads(response("1-create").body)
        assert set(ours) == set(recorded)
        mine, theirs = superjson.decode(ours["conversation"]), superjson.decode(recorded["conversation"])
        assert set(theirs) - {"deployedSpaces"} <= set(mine)
        assert set(theirs["messages"][0]) <= set(mine["messages"][0])

        message = request("3-message")
        recorded_root = theirs["rootMessageId"]
        body = message.body.replace(recorded_root.encode(), mine["rootMessageId"].encode())
        headers = {**origin, "Content-Type": _header(message.head, "Content-Type")}
        async with http.post(f"{served.url}/conversation/{ours['conversationId']}", data=body, headers=headers) as r:
            assert r.status == 200 and r.content_type == "application/jsonl"
            raw = await r.read()
        # started, title, the tokens (however many: the models differ), finalAnswer, finished
        assert _kinds(raw) == _kinds(response("3-message").body)
        assert b" " * 4096 + b'{"type":"status","status":"finished"}\n' in raw

        async with http.get(f"{served.url}/api/v2/conversations/{ours['conversationId']}") as r:
            mine = superjson.decode(await r.read())
        theirs = superjson.decode(response("3b-get-after").body)
        stored = {"files", "updates", "generationId", "materializedSeq"}  # what h2ochat does not keep
        assert len(mine["messages"]) == len(theirs["messages"]) == 3
        for our_message, their_message in zip(mine["messages"], theirs["messages"], strict=True):
            assert set(their_message) - stored <= set(our_message)
            assert our_message["from"] == their_message["from"]


def _kinds(raw: bytes) -> list[str]:
    """The update types of a stream in order, a run of tokens counted as one."""
    kinds: list[str] = []
    for update in updates(raw):
        kind = type(update).__name__
        if not (kinds and kind == kinds[-1] == "StreamUpdate"):
            kinds.append(kind)
    return kinds
