"""Today's chat-ui reads and small writes on h2ochat's server: /api/v2, settings, delete, the prompt."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from h2ochat.protocol import superjson
from h2ochat.server import RunningServer, start_server
from tests.chatui_current import Current, last_answer
from tests.helpers import FIXED_MODEL, fixed_config


@pytest.fixture
async def served() -> AsyncIterator[RunningServer]:
    async with start_server(fixed_config(text="Hello there.")) as server:
        yield server


@pytest.fixture
async def client(served: RunningServer) -> AsyncIterator[Current]:
    client = Current(served.url)
    await client.start()
    yield client
    await client.close()


async def test_models_in_a_superjson_envelope(client: Current) -> None:
    status, body, response = await client.request("GET", "/api/v2/models")
    assert status == 200 and response.headers["Cache-Control"] == "private, max-age=60"
    [model] = superjson.decode(body)
    assert model["id"] == model["name"] == FIXED_MODEL and model["multimodal"] is False and not model["unlisted"]


async def test_conversations_listed_newest_first_by_page(client: Current) -> None:
    first, _ = await client.create()
    second, _ = await client.create()
    status, body, _ = await client.request("GET", "/api/v2/conversations?p=0")
    listed = superjson.decode(body)
    assert status == 200 and listed["hasMore"] is False
    assert [c["id"] for c in listed["conversations"]] == [second, first]
    assert listed["conversations"][0]["_id"] == second and listed["conversations"][0]["modelId"] == FIXED_MODEL
    assert "conversations.0.updatedAt" in body["meta"]["values"]
    status, body, _ = await client.request("GET", "/api/v2/conversations?p=1")
    assert status == 200 and superjson.decode(body) == {"conversations": [], "hasMore": False}
    status, body, _ = await client.request("GET", "/api/v2/conversations?p=-1")
    assert status == 400 and "page" in body["message"]


async def test_thirty_conversations_a_page(client: Current) -> None:
    for _ in range(31):
        await client.create()
    first = superjson.decode((await client.request("GET", "/api/v2/conversations"))[1])
    second = superjson.decode((await client.request("GET", "/api/v2/conversations?p=1"))[1])
    assert len(first["conversations"]) == 30 and first["hasMore"] is True
    assert len(second["conversations"]) == 1 and second["hasMore"] is False


async def test_a_read_without_a_session_lists_nothing(served: RunningServer) -> None:
    stranger = Current(served.url)
    try:
        status, body, _ = await stranger.request("GET", "/api/v2/conversations")
        assert status == 200 and superjson.decode(body) == {"conversations": [], "hasMore": False}
    finally:
        await stranger.close()


async def test_get_conversation_statuses(client: Current) -> None:
    assert (await client.request("GET", "/api/v2/conversations/not-an-id"))[0] == 400
    status, body, _ = await client.request("GET", "/api/v2/conversations/" + "a" * 24)
    assert status == 404 and body["message"] == "Conversation not found"


async def test_rename_and_its_refusals(client: Current) -> None:
    conversation, _ = await client.create()
    path = f"/api/v2/conversations/{conversation}"
    status, body, _ = await client.request("PATCH", path, json={"title": "  Named  "})
    assert status == 200 and body == {"json": {"success": True}}
    assert (await client.read(conversation))["title"] == "Named"
    assert (await client.request("PATCH", path, json={"model": FIXED_MODEL}))[0] == 200  # the same model
    for patch, fragment in [
        ({"title": ""}, "1 to 100"),
        ({"title": "x" * 101}, "1 to 100"),
        ({"model": "nope"}, "Unknown model"),
        ({"color": "red"}, "color"),
    ]:
        status, body, _ = await client.request("PATCH", path, json=patch)
        assert status == 400 and fragment in body["message"], (patch, body)


async def test_delete_a_message_with_what_follows_then_the_conversation(client: Current) -> None:
    conversation, root = await client.create()
    await client.send(conversation, root, "question")
    user = (await client.read(conversation))["messages"][1]
    status, body, _ = await client.request("DELETE", f"/api/v2/conversations/{conversation}/message/{user['id']}")
    assert status == 200 and body == {"json": {"success": True}}
    assert [m["from"] for m in (await client.read(conversation))["messages"]] == ["system"]
    for message, expected in [(user["id"], 404), (root, 400)]:  # gone; the root cannot be deleted
        status, body, _ = await client.request("DELETE", f"/api/v2/conversations/{conversation}/message/{message}")
        assert status == expected and body["message"]
    status, body, _ = await client.request("DELETE", f"/api/v2/conversations/{conversation}")
    assert status == 200 and body == {"json": {"success": True}}
    assert (await client.request("DELETE", f"/api/v2/conversations/{conversation}"))[0] == 404
    assert (await client.request("GET", f"/api/v2/conversations/{conversation}"))[0] == 404


async def test_settings_user_and_feature_flags(client: Current) -> None:
    status, body, _ = await client.request("GET", "/api/v2/user/settings")
    settings = superjson.decode(body)
    assert status == 200 and settings["welcomeModalSeen"] is True and settings["activeModel"] == FIXED_MODEL
    assert "welcomeModalSeenAt" in body["meta"]["values"]  # a Date
    body = {"activeModel": FIXED_MODEL, "shareConversationsWithModelAuthors": False, "streamingMode": "smooth"}
    status, raw, _ = await client.request("POST", "/api/v2/user/settings", json=body)
    assert status == 200 and raw == b""
    settings = superjson.decode((await client.request("GET", "/api/v2/user/settings"))[1])
    assert settings["shareConversationsWithModelAuthors"] is False and settings["welcomeModalSeen"] is True
    status, body, _ = await client.request("POST", "/api/v2/user/settings", json={"activeModel": "nope"})
    assert status == 400 and "Unknown model" in body["message"]
    status, body, _ = await client.request("POST", "/api/v2/user/settings", data={"activeModel": FIXED_MODEL})
    assert status == 415 and "JSON" in body["message"]
    status, body, _ = await client.request("GET", "/api/v2/user")
    assert status == 200 and body == {"json": None}
    status, body, _ = await client.request("GET", "/api/v2/feature-flags")
    assert status == 200 and body["json"]["loginEnabled"] is False


async def test_todays_clients_meet_no_welcome_gate(served: RunningServer) -> None:
    """chat-ui of today has no gate: a client that never posts settings creates and chats."""
    newcomer = Current(served.url)
    try:
        conversation, root = await newcomer.create()
        await newcomer.send(conversation, root, "hello")
    finally:
        await newcomer.close()


async def test_the_prompt_of_a_message(client: Current) -> None:
    conversation, root = await client.create(preprompt="Be kind.")
    await client.send(conversation, root, "question")
    tree = await client.read(conversation)
    answer = last_answer(tree)
    status, body, _ = await client.request("GET", f"/conversation/{conversation}/message/{answer['id']}/prompt")
    assert status == 200 and body["model"] == FIXED_MODEL and isinstance(body["parameters"], dict)
    assert body["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "question"}]
    status, body, _ = await client.request("GET", f"/conversation/{conversation}/message/{'0' * 36}/prompt")
    assert status == 404 and "Message not found" in body["message"]
