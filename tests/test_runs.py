"""Answers that outlive their connection (issue 22): runs, their logs, and reattaching to them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from msgspec.structs import replace

from h2ochat.protocol.chatui_bodies import message_post
from h2ochat.protocol.runs import split_events
from h2ochat.protocol.sse import EventStreamDecoder, ServerSentEvent
from h2ochat.server import start_server
from h2ochat.server.chatui.runs import RUNS
from h2ochat.server.config import ServerConfig
from h2ochat.server.edge.http import STORE
from tests.chatui_current import multipart
from tests.helpers import FIXED_MODEL, RawClient, fixed_config

Client = Callable[[str], RawClient]
WORDS = 60
TEXT = "".join(f"w{i} " for i in range(WORDS))


def slow(db: str = ":memory:", **server: Any) -> ServerConfig:
    """One word per token, slowly enough that a client can leave in the middle."""
    return replace(fixed_config(db, text=TEXT, delay=0.01), welcome_gate=False, **server)


async def leave_after(client: RawClient, conversation: str, count: int) -> tuple[list[str], str]:
    """Post a 2023 message, read ``count`` events of its stream, and drop the connection."""
    async with client.http.post(
        f"{client.url}/conversation/{conversation}", json=client.message_body("Hi"), headers={"Referer": client.url}
    ) as response:
        assert response.status == 200
        run_id = response.headers["H2ochat-Generation-Id"]
        decoder, got = EventStreamDecoder(), []
        async for chunk in response.content.iter_any():
            got += [event.data for event in decoder.decode(chunk)]
            if len(got) >= count:
                break
        response.close()
    return got[:count] if len(got) >= count else pytest.fail(f"only {len(got)} events arrived"), run_id


async def reattach(client: RawClient, conversation: str, query: str = "", **headers: str) -> list[ServerSentEvent]:
    async with client.http.get(f"{client.url}/conversation/{conversation}/stream{query}", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/event-stream"
        decoder = EventStreamDecoder()
        return decoder.decode(await response.read()) + decoder.flush()


def tokens(datas: list[str]) -> str:
    """The text of TGI events (the end of sequence token is special: not text)."""
    events = [json.loads(data)["token"] for data in datas]
    return "".join(token["text"] for token in events if not token["special"])


async def test_a_client_that_left_gets_exactly_the_events_it_missed(raw_client: Client) -> None:
    async with start_server(slow()) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        first, run_id = await leave_after(client, conversation, 5)
        rest = await reattach(client, conversation, f"?generationId={run_id}&fromSeq=5")
        updates, end = rest[:-1], rest[-1]
        assert [int(e.id) for e in updates] == list(range(6, int(updates[-1].id) + 1))
        assert {e.event for e in updates} == {"update"}
        assert end.event == "end" and json.loads(end.data) == {"status": "completed"}
        datas = first + [e.data for e in updates]
        assert tokens(datas) == TEXT and json.loads(datas[-1])["generated_text"] == TEXT
        # Exactly once: the whole log again from 0 is the stream the first client would have read.
        again = await reattach(client, conversation, f"?generationId={run_id}")
        assert [e.data for e in again[:-1]] == datas


async def test_last_event_id_wins_over_from_seq_and_no_id_means_the_newest_run(raw_client: Client) -> None:
    async with start_server(slow()) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        _, old = await leave_after(client, conversation, 1)
        await reattach(client, conversation, f"?generationId={old}")  # until it ends
        _, new = await leave_after(client, conversation, 1)
        got = await reattach(client, conversation, "?fromSeq=2", **{"Last-Event-ID": "50"})
        assert [int(e.id) for e in got[:-1]] == list(range(51, int(got[-2].id) + 1))
        async with client.http.get(f"{server.url}/conversation/{conversation}/stream") as response:
            assert response.headers["H2ochat-Generation-Id"] == new != old


async def test_today_s_protocol_reattaches_with_the_client_s_generation_id(raw_client: Client) -> None:
    async with start_server(slow()) as server:
        client = raw_client(server.url)
        _, created, _ = await client.request("POST", "/conversation", json={"model": FIXED_MODEL})
        conversation = created["conversationId"]
        _, document, _ = await client.request("GET", f"/api/v2/conversations/{conversation}")
        root = document["json"]["rootMessageId"]
        generation = str(uuid.uuid4())
        seen: list[str] = []
        async with client.http.post(
            f"{server.url}/conversation/{conversation}",
            data=multipart(message_post("Hi", root, generation_id=generation)),
            headers={"Origin": server.url},
        ) as response:
            assert response.status == 200 and response.headers["H2ochat-Generation-Id"] == generation
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                complete, _, buffer = buffer.rpartition(b"\n")
                seen += [e for e in split_events("current", complete + b"\n") if "keepAlive" not in e]
                if len(seen) >= 4:
                    break
        rest = await reattach(client, conversation, f"?generationId={generation}&fromSeq={len(seen)}")
        updates = [json.loads(e.data) for e in rest[:-1]]
        assert [int(e.id) for e in rest[:-1]] == list(range(len(seen) + 1, len(seen) + 1 + len(updates)))
        whole = [json.loads(e) for e in seen] + updates
        assert whole[0] == {"type": "status", "status": "started"}
        streamed = "".join(u["token"] for u in whole if u["type"] == "stream")
        final = next(u for u in whole if u["type"] == "finalAnswer")
        assert streamed == final["text"] == TEXT and whole[-1] == {"type": "status", "status": "finished"}
        assert json.loads(rest[-1].data) == {"status": "completed"}


async def test_two_readers_see_the_same_answer_growing(raw_client: Client) -> None:
    async with start_server(slow()) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        _, run_id = await leave_after(client, conversation, 1)
        one, two = await asyncio.gather(
            reattach(client, conversation, f"?generationId={run_id}"),
            reattach(client, conversation, f"?generationId={run_id}"),
        )
        assert [(e.id, e.data) for e in one] == [(e.id, e.data) for e in two]
        assert tokens([e.data for e in one[:-1]]) == TEXT


async def test_a_stop_ends_the_reattached_stream_as_interrupted(raw_client: Client) -> None:
    config = replace(fixed_config(text="word " * 2000, delay=0.01), welcome_gate=False)
    async with start_server(config) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        _, run_id = await leave_after(client, conversation, 2)
        reading = asyncio.ensure_future(reattach(client, conversation, f"?generationId={run_id}"))
        await asyncio.sleep(0.2)
        assert (await client.request("POST", f"/conversation/{conversation}/stop-generating"))[0] == 200
        got = await asyncio.wait_for(reading, 10)
        assert got[-1].event == "end" and json.loads(got[-1].data) == {"status": "interrupted"}
        assert "error" in json.loads(got[-2].data)  # the answer's own last event says it was stopped
        _, stored, _ = await client.request("GET", f"/api/conversation/{conversation}")
        assert stored["messages"][-1]["status"] == "interrupted"


async def test_a_session_runs_at_most_max_running_answers_and_a_refusal_stores_nothing(raw_client: Client) -> None:
    config = slow(max_running_answers=2)
    config = replace(
        config, models=[replace(config.models[0], endpoints=[replace(config.models[0].endpoints[0], delay=0.05)])]
    )
    async with start_server(config) as server:
        client = raw_client(server.url)
        conversations = [await client.create() for _ in range(3)]
        for conversation in conversations[:2]:
            await leave_after(client, conversation, 1)
        status, body, _ = await client.message(conversations[2], "Hi")
        assert status == 429 and "max_running_answers" in body["message"]
        _, stored, _ = await client.request("GET", f"/api/conversation/{conversations[2]}")
        assert [m["role"] for m in stored["messages"]] == ["system"]
        _, running, _ = await client.request("GET", "/api/running")
        assert {r["conversationId"] for r in running["running"]} == set(conversations[:2])
        other = raw_client(server.url)  # another session is not counted against this one
        assert (await other.message(await other.create(), "Hi"))[0] == 200


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("?generationId=not-a-uuid", {}, 400),
        ("?fromSeq=-1", {}, 400),
        ("?fromSeq=x", {}, 400),
        ("", {"Last-Event-ID": "1e3"}, 400),
        (f"?generationId={uuid.uuid4()}", {}, 404),
    ],
)
async def test_bad_reattach_requests_are_refused_clearly(
    raw_client: Client, query: str, headers: dict[str, str], status: int
) -> None:
    async with start_server(slow()) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        await leave_after(client, conversation, 1)
        got, body, _ = await client.request("GET", f"/conversation/{conversation}/stream{query}", headers=headers)
        assert got == status and body["message"]


async def test_another_session_cannot_reattach(raw_client: Client) -> None:
    async with start_server(slow()) as server:
        owner, stranger = raw_client(server.url), raw_client(server.url)
        conversation = await owner.create()
        _, run_id = await leave_after(owner, conversation, 1)
        await stranger.create()
        status, body, _ = await stranger.request("GET", f"/conversation/{conversation}/stream?generationId={run_id}")
        assert status == 404 and body["message"] == "Conversation not found"


async def test_a_used_generation_id_is_refused(raw_client: Client) -> None:
    async with start_server(slow()) as server:
        client = raw_client(server.url)
        _, created, _ = await client.request("POST", "/conversation", json={"model": FIXED_MODEL})
        conversation = created["conversationId"]
        _, document, _ = await client.request("GET", f"/api/v2/conversations/{conversation}")
        generation = str(uuid.uuid4())
        statuses = []
        for _ in range(2):
            data = multipart(message_post("Hi", document["json"]["rootMessageId"], generation_id=generation))
            url = f"/conversation/{conversation}"
            status, _, _ = await client.request("POST", url, data=data, headers={"Origin": server.url})
            statuses.append(status)
        assert statuses == [200, 409]


async def test_an_ended_log_keeps_its_closing_events_then_the_text_is_what_remains(raw_client: Client) -> None:
    async with start_server(slow(run_log_keep=0)) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        _, run_id = await leave_after(client, conversation, 1)
        whole = await reattach(client, conversation, f"?generationId={run_id}")
        for run in list(server.app[RUNS].local.values()):  # its end written too
            assert run.task is not None
            await run.task
        await asyncio.sleep(0.01)  # ended before the cutoff, which is now, to the millisecond
        store = server.app[STORE]
        before = store.statements
        await store.upkeep()
        assert store.statements > before
        late = await reattach(client, conversation, f"?generationId={run_id}&fromSeq=3")
        assert [e.id for e in late[:-1]] == [whole[-2].id]  # the last event, with generated_text
        assert json.loads(late[0].data)["generated_text"] == TEXT
