"""The session checked in the statement of each step a request begins with (issue 20's last figure).

Creating a conversation, reading one to post a message to it, and deleting one no longer follow a
lookup of the session: the store checks it (live, issued by the server, and for 2023's message past the
welcome gate) and records its use in the step's own round trip. These tests hold the rules that the
lookup used to keep, on both databases, and count the round trips on PostgreSQL through the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import pytest
from msgspec.structs import replace

from h2ochat.server import start_server
from h2ochat.server.edge.http import STORE
from h2ochat.server.storage import SessionGone, Store
from tests.helpers import FIXED_MODEL, RawClient, fixed_config
from tests.pgfixtures import opened

Client = Any
T = TypeVar("T")

# Store -------------------------------------------------------------------------------------------


async def test_a_creation_answers_what_it_stored(store: Store) -> None:
    session = await store.new_session()
    created = await store.create_conversation(session, "m", preprompt="Be brief.")
    assert created.root.content == "Be brief." and created.conversation.root_id == created.root.id
    assert await store.conversation_with_messages(created.id, session) == (created.conversation, [created.root])


async def test_steps_refuse_a_session_never_issued_or_expired(db: str) -> None:
    async with opened(db, session_idle=2.0) as replica:
        idle = await replica.new_session()
        kept = (await replica.create_conversation(idle, "m")).id
        await asyncio.sleep(2.1)
        for session in (idle, "A" * 43):
            with pytest.raises(SessionGone, match="not one the server issued, or it expired"):
                await replica.create_conversation(session, "m")
        assert [c.id for c in await replica.conversations(idle)] == [kept]  # nothing stored by the refusals
        assert await replica.conversation_with_messages(kept, idle) is None
        assert not await replica.delete_conversation(kept, idle)
        assert [m.role for m in await replica.messages(kept)] == ["system"]  # still there, for upkeep to expire
        live = await replica.new_session()
        assert await replica.conversation_with_messages((await replica.create_conversation(live, "m")).id, live)


async def test_the_read_that_begins_a_message_can_ask_for_the_welcome_gate(store: Store) -> None:
    session = await store.new_session()
    conversation = (await store.create_conversation(session, "m")).id
    assert await store.conversation_with_messages(conversation, session, accepted=True) is None
    assert await store.conversation_with_messages(conversation, session) is not None
    await store.save_settings(session, None, False, True)
    assert await store.conversation_with_messages(conversation, session, accepted=True) is not None


async def test_each_step_records_the_sessions_use(db: str) -> None:
    """As a lookup does: a step more than a quarter of ``session_idle`` after the last use counts as one."""
    async with opened(db, session_idle=2.0) as replica:
        session = await replica.new_session()
        await asyncio.sleep(1.3)
        conversation = (await replica.create_conversation(session, "m")).id
        await asyncio.sleep(1.3)  # 2.6 s after it was issued: alive only through the creation's use
        assert await replica.conversation_with_messages(conversation, session) is not None
        await asyncio.sleep(1.3)
        assert await replica.delete_conversation(conversation, session)
        await asyncio.sleep(1.3)
        assert await replica.session(session) is not None  # 1.3 s after the delete, 5.2 s after it was issued
        await asyncio.sleep(2.1)
        assert await replica.session(session) is None


# Server ------------------------------------------------------------------------------------------


def cookie_of(response: aiohttp.ClientResponse) -> str:
    return response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]


async def test_a_cookie_the_server_never_issued_gets_a_new_session_on_create(raw_client: Client) -> None:
    async with start_server(fixed_config()) as server:
        planted = "A" * 43
        client: RawClient = raw_client(server.url)
        headers = {"Cookie": f"hf-chat={planted}"}
        status, body, response = await client.request(
            "POST", "/conversation", json={"model": FIXED_MODEL}, headers=headers
        )
        issued = cookie_of(response)
        assert status == 200 and issued != planted and len(issued) >= 43
        assert await server.app[STORE].session(planted) is None
        _, listed, _ = await client.request("GET", "/api/conversations", headers={"Cookie": f"hf-chat={issued}"})
        assert [c["id"] for c in listed] == [body["conversationId"]]


async def test_the_welcome_gate_still_refuses_first_for_a_live_session(raw_client: Client) -> None:
    async with start_server(fixed_config(text="Fine.")) as server:
        client: RawClient = raw_client(server.url)
        conversation = await client.create()  # creating needs no acceptance; 2023's message does
        for target in (conversation, "0" * 24):  # the gate's answer, not "not found", even for a missing one
            status, body, _ = await client.message(target, "Hi")
            assert (status, body) == (405, {"error": "You need to accept the welcome modal first"})
        await client.accept()
        status, _, _ = await client.message(conversation, "Hi")
        assert status == 200


async def test_another_sessions_conversation_is_missing_to_a_message_and_a_delete(raw_client: Client) -> None:
    async with start_server(replace(fixed_config(text="Fine."), welcome_gate=False)) as server:
        owner, other = raw_client(server.url), raw_client(server.url)
        conversation = await owner.create()
        await other.create()  # a live session of its own
        status, body, _ = await other.message(conversation, "Hi")
        assert (status, body["message"]) == (404, "Conversation not found")
        status, body, _ = await other.request("DELETE", f"/conversation/{conversation}")
        assert (status, body["message"]) == (404, "Conversation not found")
        status, _, _ = await owner.message(conversation, "Hi")
        assert status == 200


async def _counted(counting: Store, request: Awaitable[T]) -> tuple[int, T]:
    """The statements the store sent for ``request``, and its result."""
    before = counting.statements
    result = await request
    await asyncio.sleep(0.2)  # the answer's final save is sent after its last byte
    return counting.statements - before, result


@pytest.mark.parametrize("resumable", [False, True])
async def test_a_conversation_takes_six_round_trips_on_postgresql(
    postgres_url: str, raw_client: Client, resumable: bool
) -> None:
    """One for the settings, the creation, the deletion; three for a message (its tree with the session,
    the exchange, the final save): the lookup before each request was a round trip of its own. A
    resumable answer (issue 22) adds three: its run, its events in one batch, its end."""
    config = replace(fixed_config(postgres_url, text="Fine."), new_sessions_per_minute=0, resumable_answers=resumable)
    async with start_server(config) as server:
        counting, client = server.app[STORE], raw_client(server.url)
        await asyncio.sleep(0.2)  # the lease the store wrote when it opened is counted by now
        settings, _ = await _counted(counting, client.accept())
        create, conversation = await _counted(counting, client.create())
        path = f"/conversation/{conversation}"
        message, (status, _, _) = await _counted(counting, client.request("POST", path, json=client.message_body("Hi")))
        delete, _ = await _counted(counting, client.request("DELETE", path))
        assert status == 200
        if not resumable:
            assert (settings, create, message, delete) == (1, 1, 3, 1)
        else:  # the run before the exchange; its log, its end and the save may come after the stream ended
            assert (settings, create, message + delete) == (1, 1, 4 + 3)
