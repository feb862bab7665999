"""Sessions are the server's, and nothing grows without bound: over real loopback HTTP, fixed backend.

Each test here failed before sessions were issued by the server: a client-chosen id was adopted,
sessions and conversations had no bounds, and two racing requests became 500s.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from msgspec.structs import replace

import h2ochat.server.app
from h2ochat.server import start_server
from tests.helpers import FIXED_MODEL, RawClient, events, fixed_config

Client = Callable[[str], RawClient]


def cookie_of(response: aiohttp.ClientResponse) -> str:
    return response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


async def test_a_session_id_the_client_chose_is_never_adopted(raw_client: Client) -> None:
    async with start_server(fixed_config()) as server:
        planted = str(uuid.uuid4())
        client = raw_client(server.url)
        client.http.cookie_jar.update_cookies({"hf-chat": planted}, aiohttp.client.URL(server.url))
        _, _, response = await client.request("POST", "/settings", data={"ethicsModalAccepted": "true"})
        issued = cookie_of(response)
        assert issued != planted and len(issued) >= 43
        status, listed, _ = await client.request("GET", "/api/conversations")
        assert status == 200 and listed == []


async def test_accepting_the_welcome_gate_issues_a_fresh_id_and_the_old_one_stops_working(
    raw_client: Client,
) -> None:
    async with start_server(replace(fixed_config(), welcome_gate=False)) as server:
        client = raw_client(server.url)
        _, body, response = await client.request("POST", "/conversation", json={"model": FIXED_MODEL})
        first, conversation = cookie_of(response), body["conversationId"]
        _, _, response = await client.request("POST", "/settings", data={"ethicsModalAccepted": "true"})
        second = cookie_of(response)
        assert second != first
        _, listed, _ = await client.request("GET", "/api/conversations")
        assert [c["id"] for c in listed] == [conversation]  # the conversations moved with the session
        stale = {"Cookie": f"hf-chat={first}"}
        async with aiohttp.ClientSession() as other, other.get(f"{server.url}/api/conversations", headers=stale) as old:
            assert await old.json() == []
        # Later settings (a page posts them on every change of model) keep the id.
        _, _, response = await client.request("POST", "/settings", data={"ethicsModalAccepted": "true"})
        assert cookie_of(response) == second


JUNK = ["junk", "A" * 43, "not a session"]  # a dead id of the right shape among them: it is looked up


@pytest.mark.parametrize(
    "order",
    [
        ["attacker", "victim"],  # the planted one first, as a narrower path is
        ["victim", "attacker"],
        [*JUNK, "attacker", "victim"],  # padding: the victim's cookie past the lookups that used to be made
        [*JUNK, "victim", "attacker"],
    ],
)
async def test_cookies_of_two_sessions_or_too_many_cookies_give_no_session(
    raw_client: Client, order: list[str]
) -> None:
    config = replace(fixed_config(), welcome_gate=False)
    async with start_server(config) as server:
        victim, attacker = raw_client(server.url), raw_client(server.url)
        victims = await victim.create()
        await attacker.create()
        ids = {
            name: cookie_of((await c.request("GET", "/api/conversations"))[2])
            for name, c in [("victim", victim), ("attacker", attacker)]
        }
        sent = {"Cookie": "; ".join(f"hf-chat={ids.get(value, value)}" for value in order)}
        async with aiohttp.ClientSession() as browser:
            async with browser.get(f"{server.url}/api/conversations", headers=sent) as read:
                assert await read.json() == [] and "Set-Cookie" not in read.headers
            async with browser.post(f"{server.url}/conversation", json={"model": FIXED_MODEL}, headers=sent) as wrote:
                # No session, not even a new one: its cookie would replace the victim's in the browser.
                assert wrote.status == 400 and "Set-Cookie" not in wrote.headers
                assert "more than one session" in (await wrote.json())["message"]
        _, listed, _ = await attacker.request("GET", "/api/conversations")
        assert len(listed) == 1  # nothing written into the planted session
        _, listed, _ = await victim.request("GET", "/api/conversations")
        assert [c["id"] for c in listed] == [victims]


async def test_conversations_per_session_are_capped_with_a_clear_4xx(raw_client: Client) -> None:
    config = replace(fixed_config(), welcome_gate=False, max_conversations=2)
    async with start_server(config) as server:
        client = raw_client(server.url)
        await client.create()
        await client.create()
        status, body, _ = await client.request("POST", "/conversation", json={"model": FIXED_MODEL})
        assert status == 409 and "2 conversations" in body["message"] and "delete some" in body["message"]
        _, listed, _ = await client.request("GET", "/api/conversations")
        await client.request("DELETE", f"/conversation/{listed[0]['id']}")
        await client.create()  # room again


async def test_new_sessions_per_client_address_are_capped(raw_client: Client, tmp_path: Path) -> None:
    config = replace(fixed_config(str(tmp_path / "s.db")), new_sessions_per_minute=5)
    async with start_server(config) as server:
        statuses = []
        for _ in range(8):
            status, body, response = await raw_client(server.url).request(
                "POST", "/settings", data={"ethicsModalAccepted": "true"}
            )
            statuses.append(status)
        assert statuses == [200] * 5 + [429] * 3
        assert "5 per minute per client address" in body["message"] and int(response.headers["Retry-After"]) > 0
        assert (await raw_client(server.url).request("GET", "/api/models"))[0] == 200  # reads need no session


async def test_racing_posts_that_reuse_an_id_are_a_4xx_never_a_500(raw_client: Client) -> None:
    async with start_server(replace(fixed_config(), welcome_gate=False)) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        statuses: list[int] = []
        for _ in range(10):
            message_id = str(uuid.uuid4())
            bodies = [client.message_body("Hi") for _ in range(2)]
            for body in bodies:
                body["options"]["id"] = message_id
            path = f"/conversation/{conversation}"
            answers = await asyncio.gather(*(client.request("POST", path, json=body) for body in bodies))
            statuses += [status for status, _, _ in answers]
        assert 500 not in statuses and statuses.count(200) >= 10
        assert set(statuses) <= {200, 400, 409}


async def test_a_delete_while_the_message_uploads_is_a_404_never_a_500(raw_client: Client) -> None:
    async with start_server(replace(fixed_config(), welcome_gate=False)) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        body = json.dumps(client.message_body("Hi")).encode()
        sent_half = asyncio.Event()
        deleted = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield body[:10]
            sent_half.set()
            await deleted.wait()
            yield body[10:]

        posting = asyncio.create_task(
            client.request(
                "POST", f"/conversation/{conversation}", data=slow_body(), headers={"Content-Type": "application/json"}
            )
        )
        await sent_half.wait()
        await asyncio.sleep(0.2)  # the server has checked ownership and waits for the rest of the body
        assert (await client.request("DELETE", f"/conversation/{conversation}"))[0] == 200
        deleted.set()
        status, answer, _ = await posting
        assert status == 404 and "deleted" in answer["message"]


async def test_a_conversation_never_sent_a_message_is_removed_in_the_background(
    raw_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h2ochat.server.app, "UPKEEP_INTERVAL", 0.2)
    config = replace(fixed_config(str(tmp_path / "orphans.db")), welcome_gate=False, orphan_ttl=1.0)
    async with start_server(config) as server:
        client = raw_client(server.url)
        orphan, used = await client.create(), await client.create()
        status, raw, _ = await client.message(used, "Hi")
        assert status == 200 and events(raw)
        await asyncio.sleep(2.0)
        status, listed, _ = await client.request("GET", "/api/conversations")
        assert status == 200 and [c["id"] for c in listed] == [used], (orphan, listed)


async def test_idle_sessions_expire_with_their_conversations_in_the_background(
    raw_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(h2ochat.server.app, "UPKEEP_INTERVAL", 0.2)
    config = replace(fixed_config(str(tmp_path / "idle.db")), welcome_gate=False, session_idle_days=1.5 / 86400)
    async with start_server(config) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        status, raw, _ = await client.message(conversation, "Hi")
        assert status == 200 and events(raw)
        store = server.app[h2ochat.server.app.STORE]
        assert len(await store.messages(conversation)) == 3  # the system root, the question, the answer
        await asyncio.sleep(2.0)
        assert await store.messages(conversation) == []  # deleted by the background upkeep, not by a request
        status, _, _ = await client.request("GET", f"/api/conversation/{conversation}")
        assert status == 404
