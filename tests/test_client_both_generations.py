"""h2ochat's client against h2ochat's own server, in both generations of chat-ui's protocol (issue 21).

The server is the real one on loopback (fixed backend); what it received and answered is recorded
from its own response signal, and what it stored is read from its store.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from h2ochat.providers import H2oSession
from h2ochat.server.app import create_app
from h2ochat.server.edge.http import STORE
from tests.helpers import FIXED_MODEL, fixed_config

TEXT = "Hello there, general Kenobi."
USER = [{"role": "user", "content": "Hi"}]
Served = tuple[str, list[tuple[str, str, int, str]], web.Application]


async def serve(aiohttp_server: Callable[..., Awaitable[TestServer]], **endpoint: Any) -> Served:
    """The server, and (method, path, status, hf-chat cookie) of every response it sends."""
    app = create_app(fixed_config(**endpoint))
    seen: list[tuple[str, str, int, str]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append((request.method, request.path, response.status, request.cookies.get("hf-chat", "")))

    app.on_response_prepare.append(record)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), seen, app


@pytest.fixture
async def served(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Served]:
    yield await serve(aiohttp_server, text=TEXT)


async def test_a_server_of_both_generations_is_spoken_to_in_2023(served: Served) -> None:
    """h2ochat's server says it speaks both beside its models envelope: 2023 keeps the parameters."""
    url, seen, _ = served
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ParametersIgnoredWarning: the parameters are sent
        async with H2oSession(url, prefetch=False) as session:
            result = session.stream(USER, FIXED_MODEL, max_new_tokens=3, do_sample=False)
            text = "".join([token async for token in result])
            assert await session.generation() == "2023"
    assert text == "Hello there, general"  # three tokens: max_new_tokens reached the server
    assert seen[0][:3] == ("GET", "/api/v2/models", 200)
    assert ("POST", "/settings") in [(method, path) for method, path, _, _ in seen]


async def test_today_s_protocol_forced_chats_stops_and_deletes(aiohttp_server: Any) -> None:
    url, seen, app = await serve(aiohttp_server, text=TEXT, delay=0.05)
    async with H2oSession(url, prefetch=False, protocol="current") as session:
        assert await session.ask(USER, FIXED_MODEL) == TEXT
        result = session.stream(USER, FIXED_MODEL)
        assert [await result.__anext__(), await result.__anext__()] == ["Hello", " there,"]
        await result.aclose()
    # No probe (forced); per call: create, the multipart message, then the delete; the call left
    # early sends the stop point before its delete.
    once = [("POST", "/conversation"), ("POST", "/conversation/<id>")]
    assert [(method, re.sub("[0-9a-f]{24}", "<id>", path), status) for method, path, status, _ in seen] == [
        *[(method, path, 200) for method, path in once],
        ("DELETE", "/api/v2/conversations/<id>", 200),
        *[(method, path, 200) for method, path in once],
        ("POST", "/conversation/<id>/stop-generating", 200),
        ("DELETE", "/api/v2/conversations/<id>", 200),
    ]
    cookie = seen[-1][3]
    assert await app[STORE].conversations(cookie) == []  # both deleted at the end


async def test_a_conversation_in_today_s_protocol_turns_under_each_answer(served: Served) -> None:
    url, _, app = served
    async with (
        H2oSession(url, prefetch=False, protocol="current") as session,
        await session.conversation(FIXED_MODEL, "Be brief.", keep=True) as chat,
    ):
        conversation = chat.id
        assert await chat.send("What is the capital of France?").text() == TEXT
        assert await chat.send("And of Italy?").text() == TEXT
    assert conversation is not None
    messages = await app[STORE].messages(conversation)
    # One branch: the system root, then each question under the answer before it.
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "What is the capital of France?"),
        ("assistant", TEXT),
        ("user", "And of Italy?"),
        ("assistant", TEXT),
    ]
    assert [m.parent_id for m in messages] == [None, *[m.id for m in messages[:-1]]]
    assert chat.parent == messages[-1].id  # learnt once the turn ended: the next turn's parent
