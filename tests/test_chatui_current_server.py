"""The server speaks today's chat-ui (CHATUI-CURRENT.md) beside 2023: real HTTP over loopback, the
fixed backend, streams decoded with protocol/chatui.py's decoder."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from h2ochat.protocol import superjson
from h2ochat.protocol.chatui import FinalAnswerUpdate, StatusUpdate, StreamUpdate, TitleUpdate
from h2ochat.protocol.errors import H2oChatError
from h2ochat.server import RunningServer, start_server
from h2ochat.server.edge.http import CONFIG
from tests.chatui_current import Current, last_answer, multipart, updates
from tests.helpers import FIXED_MODEL, RawClient, fixed_config

TEXT = "The capital of France is Paris."


@pytest.fixture
async def served() -> AsyncIterator[RunningServer]:
    async with start_server(fixed_config(text=TEXT)) as server:
        yield server


@pytest.fixture
async def client(served: RunningServer) -> AsyncIterator[Current]:
    client = Current(served.url)
    await client.start()
    yield client
    await client.close()


async def test_create_answers_the_conversation_with_its_system_root(client: Current) -> None:
    status, body, response = await client.request(
        "POST", "/conversation", json={"model": FIXED_MODEL, "preprompt": "Be brief."}
    )
    assert status == 200 and response.content_type == "application/json"
    assert set(body) == {"conversationId", "conversation"}
    inner = superjson.decode(body["conversation"])
    assert inner["id"] == body["conversationId"] and len(body["conversationId"]) == 24
    assert inner["title"] == "New Chat" and inner["model"] == inner["modelId"] == FIXED_MODEL
    [root] = inner["messages"]
    assert root["from"] == "system" and root["content"] == "Be brief." == inner["preprompt"]
    assert root["id"] == inner["rootMessageId"] and root["ancestors"] == [] == root["children"]
    assert "messages.0.createdAt" in json.loads(body["conversation"])["meta"]["values"]  # a Date, as chat-ui says


async def test_a_2023_client_still_creates_and_reads_conversation_id(served: RunningServer) -> None:
    old = RawClient(served.url)
    try:
        await old.accept()
        conversation = await old.create()
        status, _, _ = await old.message(conversation, "Hello")
        assert status == 200
    finally:
        await old.close()


async def test_a_message_streams_message_updates_as_chat_ui_does(client: Current) -> None:
    conversation, root = await client.create()
    raw = await client.send(conversation, root, "What is the capital of France?")
    assert b"\\u0000" in raw  # tokens padded with NUL, as chat-ui pads them
    assert b"}\n" + b" " * 4096 + b'{"type":"status","status":"finished"}\n' in raw
    got = updates(raw)
    assert got[0] == StatusUpdate("started")
    assert sum(u == StatusUpdate("started") for u in got) == 1  # never two: hugchat ends a turn on a second
    assert TitleUpdate("What is the capital of") in got
    tokens = "".join(u.token for u in got if isinstance(u, StreamUpdate))
    finals = [u for u in got if isinstance(u, FinalAnswerUpdate)]
    assert tokens == TEXT and finals == [FinalAnswerUpdate(TEXT, interrupted=False)]
    assert got[-1] == StatusUpdate("finished")

    stored = await client.read(conversation)
    assert stored["title"] == "What is the capital of"
    system, user, answer = stored["messages"]
    assert system["children"] == [user["id"]] and user["ancestors"] == [root]
    assert user["content"] == "What is the capital of France?" and user["children"] == [answer["id"]]
    assert answer["content"] == TEXT and answer["ancestors"] == [root, user["id"]] and not answer["interrupted"]


async def test_the_next_turn_goes_under_the_answer_and_the_model_sees_the_branch() -> None:
    async with start_server(fixed_config(echo_prompt=True)) as server:
        client = Current(server.url)
        try:
            await client.start()
            conversation, root = await client.create(preprompt="sys")
            await client.send(conversation, root, "one")
            first = last_answer(await client.read(conversation))
            raw = await client.send(conversation, first["id"], "two")
            final = next(u for u in updates(raw) if isinstance(u, FinalAnswerUpdate))
            assert final.text == f"system: sys\nuser: one\nassistant: {first['content']}\nuser: two"
        finally:
            await client.close()


async def test_the_three_retry_cases_keep_every_branch(client: Current) -> None:
    conversation, root = await client.create()
    await client.send(conversation, root, "first question")
    tree = await client.read(conversation)
    _, user, answer = tree["messages"]

    await client.send(conversation, answer["id"], None, is_retry=True)  # regenerate: inputs ignored
    tree = await client.read(conversation)
    by_id = {m["id"]: m for m in tree["messages"]}
    assert len(by_id[user["id"]]["children"]) == 2  # two answers to one question
    assert all(by_id[a]["from"] == "assistant" for a in by_id[user["id"]]["children"])

    await client.send(conversation, user["id"], "edited question", is_retry=True)  # edit: a sibling question
    tree = await client.read(conversation)
    by_id = {m["id"]: m for m in tree["messages"]}
    questions = by_id[root]["children"]
    assert [by_id[q]["content"] for q in questions] == ["first question", "edited question"]
    assert len(by_id[questions[1]]["children"]) == 1 and by_id[user["id"]]["content"] == "first question"

    for data, status in [
        ({"id": root, "inputs": "x", "is_retry": True}, 400),  # the system root cannot be retried
        ({"id": user["id"], "inputs": "x"}, 400),  # a question is no parent of a question
        ({"id": user["id"], "is_retry": True}, 400),  # an edit without its text
        ({"id": str(uuid.uuid4()), "inputs": "x"}, 404),  # forged message id
    ]:
        got, raw, _ = await client.post(conversation, data)
        assert got == status and json.loads(raw)["message"], (data, raw)


async def test_stop_generating_cuts_the_answer_back_to_what_the_person_saw() -> None:
    text = "one two three four five six seven eight nine ten"
    async with start_server(fixed_config(text=text, delay=0.1)) as server:
        client = Current(server.url)
        try:
            await client.start()
            conversation, root = await client.create()
            generation = str(uuid.uuid4())
            data = {"id": root, "inputs": "count", "generationId": generation}
            async with client.http.post(
                f"{server.url}/conversation/{conversation}",
                data=multipart(json.dumps(data)),
                headers={"Origin": server.url},
            ) as response:
                seen = b""
                while seen.count(b'"stream"') < 3:  # "one two three" shown, 5 characters of it seen
                    seen += await response.content.readany()
                stop = {"generationId": generation, "seenContentLength": 5}
                status, body, _ = await client.request(
                    "POST", f"/conversation/{conversation}/stop-generating", json=stop
                )
                assert status == 200, body
                raw = seen + await response.read()
            got = updates(raw)
            assert FinalAnswerUpdate("one t", interrupted=True) in got and got[-1] == StatusUpdate("finished")
            answer = last_answer(await client.read(conversation))
            assert answer["content"] == "one t" and answer["interrupted"]
        finally:
            await client.close()


async def test_stop_refuses_a_bad_stop_point(client: Current) -> None:
    conversation, _ = await client.create()
    path = f"/conversation/{conversation}/stop-generating"
    for body in ({"seenContentLength": -1}, {"generationId": "nope"}, {"other": 1}):
        status, answer, _ = await client.request("POST", path, json=body)
        assert status == 400 and answer["message"], body
    assert (await client.request("POST", path))[0] == 200  # no body: 2023's stop


async def test_a_conversation_continues_across_generations(served: RunningServer, client: Current) -> None:
    # Started today, continued in 2023: the 2023 message goes after today's answer.
    conversation, root = await client.create()
    await client.send(conversation, root, "today")
    old = RawClient(served.url)
    await old.close()
    old.http = client.http  # the same session, spoken in 2023
    status, _, _ = await old.message(conversation, "2023")
    assert status == 200
    tree = await client.read(conversation)
    assert [m["content"] for m in tree["messages"] if m["from"] == "user"] == ["today", "2023"]
    assert last_answer(tree)["ancestors"][-2] == tree["messages"][2]["id"]  # under today's answer

    # Started in 2023, continued today under its last answer.
    started = await old.create()
    await old.message(started, "2023 first")
    parent = last_answer(await client.read(started))["id"]
    raw = await client.send(started, parent, "today second")
    assert next(u for u in updates(raw) if isinstance(u, FinalAnswerUpdate)).text == TEXT
    status, body, _ = await old.request("GET", f"/api/conversation/{started}")
    assert [m["content"] for m in body["messages"] if m["role"] == "user"] == ["2023 first", "today second"]


async def test_hostile_message_posts_are_refused_with_a_reason(served: RunningServer, client: Current) -> None:
    conversation, root = await client.create()
    good = {"id": root, "inputs": "x"}
    url = f"{served.url}/conversation/{conversation}"
    cases: list[tuple[Any, dict[str, str], int]] = [
        (b"--x\r\nbroken", {"Content-Type": "multipart/form-data"}, 400),  # no boundary
        (b"garbage", {"Content-Type": "multipart/form-data; boundary=zzz"}, 400),
    ]
    for body, headers, status in cases:
        async with client.http.post(url, data=body, headers={"Origin": served.url, **headers}) as response:
            assert response.status == status, await response.text()
            assert (await response.json())["message"]
    for data, status in [
        (None, 400),  # no data part
        ("{not json", 400),
        ({"id": "not-a-uuid", "inputs": "x"}, 400),
        ({"inputs": "x"}, 400),  # no parent
        ({"id": root, "inputs": ""}, 400),
        ({"id": root, "inputs": "x" * (served.app[CONFIG].max_input_chars + 1)}, 400),
    ]:
        got, raw, _ = await client.post(conversation, data)
        assert got == status and json.loads(raw)["message"], (data, raw)
    got, raw, _ = await client.post(conversation, good, picture=b"aGVsbG8=")
    assert got == 415 and b"text only" in raw
    got, raw, _ = await client.post(conversation, {"id": root, "inputs": "x" * 2_000_000})
    assert got == 413
    got, raw, _ = await client.post("0" * 24, good)  # forged conversation id
    assert got == 404
    # Cross-site: no Origin (nor Referer), or another one.
    for headers, status in [({}, 403), ({"Origin": "http://evil.example"}, 403)]:
        async with client.http.post(url, data=multipart(json.dumps(good)), headers=headers) as response:
            assert response.status == status


async def test_another_sessions_conversation_is_missing_everywhere(served: RunningServer, client: Current) -> None:
    conversation, root = await client.create()
    stranger = Current(served.url)
    try:
        await stranger.start()
        got, _, _ = await stranger.post(conversation, {"id": root, "inputs": "mine now"})
        assert got == 404
        for method, path in [
            ("GET", f"/api/v2/conversations/{conversation}"),
            ("PATCH", f"/api/v2/conversations/{conversation}"),
            ("DELETE", f"/api/v2/conversations/{conversation}"),
            ("DELETE", f"/api/v2/conversations/{conversation}/message/{root}"),
            ("GET", f"/conversation/{conversation}/message/{root}/prompt"),
            ("POST", f"/conversation/{conversation}/stop-generating"),
        ]:
            kwargs = {"json": {"title": "x"}} if method == "PATCH" else {}
            status, body, _ = await stranger.request(method, path, **kwargs)
            assert status == 404 and body["message"], (method, path)
        assert (await client.read(conversation))["title"] == "New Chat"
    finally:
        await stranger.close()


async def test_a_message_past_the_rate_limit_is_refused() -> None:
    config = fixed_config(text="ok")
    async with start_server(replace(config, rate_limit_per_minute=1)) as server:
        client = Current(server.url)
        try:
            await client.start()
            conversation, root = await client.create()
            await client.send(conversation, root, "one")
            status, raw, response = await client.post(conversation, {"id": root, "inputs": "two"})
            assert status == 429 and response.headers["Retry-After"] and json.loads(raw)["message"]
        finally:
            await client.close()


async def test_a_failing_model_ends_the_stream_with_status_error() -> None:
    async with start_server(fixed_config(text="a b c d", fail_after=2)) as server:
        client = Current(server.url)
        try:
            await client.start()
            conversation, root = await client.create()
            raw = await client.send(conversation, root, "go")
            assert b'"status":"error"' in raw and b'"finished"' not in raw
            with pytest.raises(H2oChatError, match="failed on purpose"):
                updates(raw)
        finally:
            await client.close()


async def test_an_answer_cut_by_its_length_is_interrupted(client: Current, served: RunningServer) -> None:
    conversation, root = await client.create()
    status, _, _ = await client.request(
        "PATCH", f"/conversation/{conversation}", json={"settings": {"max_new_tokens": 2}}
    )
    assert status == 200
    raw = await client.send(conversation, root, "go")
    assert FinalAnswerUpdate("The capital", interrupted=True) in updates(raw)


async def test_concurrent_stops_and_messages_do_not_break_the_tree(client: Current) -> None:
    conversation, root = await client.create()
    await asyncio.gather(*(client.send(conversation, root, f"q{i}") for i in range(3)))
    tree = await client.read(conversation)
    assert len(tree["messages"]) == 7 and len(tree["messages"][0]["children"]) == 3


async def test_a_full_conversation_and_a_model_no_longer_served(tmp_path: Path) -> None:
    config = replace(fixed_config(str(tmp_path / "chat.db"), text="ok"), max_messages=3)
    async with start_server(config) as server:
        client = Current(server.url)
        try:
            await client.start()
            conversation, root = await client.create()
            await client.send(conversation, root, "one")  # the root and this exchange: 3 messages
            status, raw, _ = await client.post(conversation, {"id": root, "inputs": "two"})
            assert status == 409 and b"start a new conversation" in raw
            cookies = client.http.cookie_jar
        finally:
            await client.close()
    renamed = replace(config, models=[replace(config.models[0], name="test/other")])
    async with start_server(renamed) as server:
        client = Current(server.url)
        try:
            client.http.cookie_jar.update_cookies({c.key: c.value for c in cookies})
            status, raw, _ = await client.post(conversation, {"id": root, "inputs": "three"})
            assert status == 410 and b"no longer served" in raw
        finally:
            await client.close()
