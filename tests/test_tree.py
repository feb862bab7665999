"""Conversations as trees over real HTTP (issue 20): versions, edits, the branch shown, deletes, votes,
a system prompt per conversation, and the cap on messages; every refusal with a client that tries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from msgspec.structs import replace
from yarl import URL

from h2ochat.server import ModelConfig, RunningServer, ServerConfig, start_server
from h2ochat.server.config import FixedEndpoint
from tests.helpers import FIXED_MODEL, RawClient, branch, events


def _config(preprompt: str = "", **server: Any) -> ServerConfig:
    # The answer is every message the model was sent, "role: content" a line: the prompt made visible.
    model = ModelConfig(name=FIXED_MODEL, preprompt=preprompt, endpoints=[FixedEndpoint(echo_prompt=True)])
    return replace(ServerConfig(port=0, db=":memory:", models=[model]), **server)


@pytest.fixture
async def served() -> AsyncIterator[RunningServer]:
    async with start_server(_config("You are a test.")) as server:
        yield server


@pytest.fixture
async def client(served: RunningServer) -> AsyncIterator[RawClient]:
    client = RawClient(served.url)
    await client.accept()
    yield client
    await client.close()


async def read(client: RawClient, conversation: str) -> dict[str, Any]:
    status, body, _ = await client.request("GET", f"/api/conversation/{conversation}")
    assert status == 200, body
    return dict(body)


async def post(client: RawClient, conversation: str, body: dict[str, Any]) -> str:
    """The answer's text."""
    status, raw, _ = await client.request("POST", f"/conversation/{conversation}", json=body)
    assert status == 200, raw
    return str(events(raw)[-1]["generated_text"])


def retry(message_id: str, inputs: str) -> dict[str, Any]:
    options = {"id": message_id, "response_id": str(uuid.uuid4()), "is_retry": True}
    return {"inputs": inputs, "parameters": {}, "stream": True, "options": options}


async def test_retry_keeps_every_answer_and_an_edit_keeps_the_old_branch(client: RawClient) -> None:
    conversation = await client.create()
    one = client.message_body("one")
    await post(client, conversation, one)
    await post(client, conversation, client.message_body("two"))
    one_id = one["options"]["id"]
    for _ in range(2):  # regenerate the first answer twice: three versions under "one"
        assert await post(client, conversation, retry(one_id, "one")) == "system: You are a test.\nuser: one"
    tree = await read(client, conversation)
    by_id = {m["id"]: m for m in tree["messages"]}
    answers = by_id[one_id]["children"]
    assert len(answers) == 3 and all(by_id[a]["role"] == "assistant" for a in answers)
    assert tree["activeMessageId"] == answers[2] and branch(tree)[0]["content"] == "one"
    assert by_id[answers[0]]["children"]  # the first version still leads to "two"

    # An edit of "one" is a new question beside it, answered from the root: "two" is not in its prompt.
    prompt = await post(client, conversation, retry(one_id, "uno"))
    assert prompt == "system: You are a test.\nuser: uno"
    tree = await read(client, conversation)
    root = tree["rootMessageId"]
    edited = branch(tree)[0]
    assert edited["parentId"] == root and edited["ancestors"] == [root] and edited["id"] != one_id
    assert {m["id"]: m for m in tree["messages"]}[root]["children"] == [one_id, edited["id"]]
    assert len(tree["messages"]) == 1 + 4 + 2 + 2  # nothing was ever replaced


async def test_the_branch_shown_is_stored_and_follows_a_chosen_version(
    served: RunningServer, client: RawClient
) -> None:
    conversation = await client.create()
    one = client.message_body("one")
    await post(client, conversation, one)
    await post(client, conversation, client.message_body("two"))
    first_answer = branch(await read(client, conversation))[1]["id"]
    await post(client, conversation, retry(one["options"]["id"], "one"))  # a second version, with nothing after it

    # Back to the first version: the branch goes on down its newest continuation, "two".
    status, body, _ = await client.request(
        "PATCH", f"/conversation/{conversation}", json={"activeMessageId": first_answer}
    )
    assert status == 200
    tree = await read(client, conversation)
    assert [m["content"].splitlines()[-1] for m in branch(tree)] == ["one", "user: one", "two", "user: two"]
    assert body == {"activeMessageId": tree["activeMessageId"]} == {"activeMessageId": branch(tree)[-1]["id"]}

    # Another tab (the same session, a new connection) and a restarted read see the same branch.
    other = RawClient(served.url)
    other.http.cookie_jar.update_cookies(client.http.cookie_jar.filter_cookies(URL(served.url)))
    try:
        assert (await read(other, conversation))["activeMessageId"] == tree["activeMessageId"]
    finally:
        await other.close()
    # A new message goes on the branch shown.
    await post(client, conversation, client.message_body("three"))
    assert [m["content"] for m in branch(await read(client, conversation))][::2] == ["one", "two", "three"]


async def test_deleting_a_message_takes_what_follows_and_moves_the_branch_beside_it(client: RawClient) -> None:
    conversation = await client.create()
    one = client.message_body("one")
    await post(client, conversation, one)
    await post(client, conversation, client.message_body("two"))
    one_id = one["options"]["id"]
    await post(client, conversation, retry(one_id, "uno"))  # the branch shown: uno
    tree = await read(client, conversation)
    uno = branch(tree)[0]["id"]
    path = f"/conversation/{conversation}/message"

    status, body, _ = await client.request("DELETE", f"{path}/{uno}")
    assert status == 200
    tree = await read(client, conversation)
    assert [m["content"] for m in branch(tree)][::2] == ["one", "two"]  # back on the other version
    assert body == {"activeMessageId": tree["activeMessageId"]} and len(tree["messages"]) == 5
    # Deleting the last question of a branch leaves its parent, the answer before it, as the leaf.
    two = branch(tree)[2]["id"]
    assert (await client.request("DELETE", f"{path}/{two}"))[1] == {"activeMessageId": branch(tree)[1]["id"]}

    status, body, _ = await client.request("DELETE", f"{path}/{tree['rootMessageId']}")
    assert status == 400 and "delete the conversation instead" in body["message"]
    status, body, _ = await client.request("DELETE", f"{path}/{uno}")
    assert status == 404 and "not a message of this conversation" in body["message"]


async def test_votes_are_kept_on_answers_only(client: RawClient) -> None:
    conversation = await client.create()
    one = client.message_body("one")
    await post(client, conversation, one)
    answer = one["options"]["response_id"]
    vote = f"/conversation/{conversation}/message/{{}}/vote"
    assert (await client.request("POST", vote.format(answer), json={"score": -1}))[0] == 200
    assert {m["id"]: m for m in (await read(client, conversation))["messages"]}[answer]["score"] == -1
    assert (await client.request("POST", vote.format(answer), json={"score": 0}))[0] == 200
    refusals = [
        (vote.format(answer), {"score": 2}, 400, "score must be 1 (good), -1 (bad) or 0"),
        (vote.format(answer), {"score": "up"}, 400, "Expected `int`"),
        (vote.format(one["options"]["id"]), {"score": 1}, 404, "is not an answer of this conversation"),
        (vote.format(str(uuid.uuid4())), {"score": 1}, 404, "is not an answer of this conversation"),
    ]
    for url, body, status, complaint in refusals:
        got, answer_body, _ = await client.request("POST", url, json=body)
        assert got == status and complaint in answer_body["message"], (body, answer_body)
    assert {m["id"]: m for m in (await read(client, conversation))["messages"]}[answer]["score"] == 0


async def test_a_system_prompt_per_conversation_reaches_the_model(client: RawClient) -> None:
    default = await client.create()
    assert (await read(client, default))["preprompt"] == "You are a test."  # the model's, by default
    status, body, _ = await client.request(
        "POST", "/conversation", json={"model": FIXED_MODEL, "preprompt": "Talk like a pirate."}
    )
    assert status == 200
    pirate = body["conversationId"]
    assert await post(client, pirate, client.message_body("Hi")) == "system: Talk like a pirate.\nuser: Hi"

    # A new system prompt applies from the next answer; an empty one sends none.
    assert (await client.request("PATCH", f"/conversation/{pirate}", json={"preprompt": "Be brief."}))[0] == 200
    answer = await post(client, pirate, client.message_body("Again"))
    assert answer.splitlines()[0] == "system: Be brief." and answer.endswith("user: Again")
    assert (await client.request("PATCH", f"/conversation/{pirate}", json={"preprompt": ""}))[0] == 200
    assert (await post(client, pirate, client.message_body("Last"))).splitlines()[0] == "user: Hi"

    too_long = "x" * 100_001
    for method, url, body in [
        ("POST", "/conversation", {"model": FIXED_MODEL, "preprompt": too_long}),
        ("PATCH", f"/conversation/{pirate}", {"preprompt": too_long}),
    ]:
        status, answer_body, _ = await client.request(method, url, json=body)
        assert status == 400 and "preprompt is 100001 characters" in answer_body["message"]
    assert (await read(client, pirate))["preprompt"] == ""


async def test_another_sessions_conversation_and_forged_ids_are_answered_as_missing(
    served: RunningServer, client: RawClient
) -> None:
    conversation = await client.create()
    one = client.message_body("one")
    await post(client, conversation, one)
    other_conversation = await client.create()
    stranger = RawClient(served.url)
    await stranger.accept()
    answer = one["options"]["response_id"]
    try:
        for method, url, body in [
            ("DELETE", f"/conversation/{conversation}/message/{answer}", None),
            ("POST", f"/conversation/{conversation}/message/{answer}/vote", {"score": 1}),
            ("PATCH", f"/conversation/{conversation}", {"activeMessageId": answer}),
        ]:
            status, refused, _ = await stranger.request(method, url, json=body)
            assert status == 404 and refused["message"] == "Conversation not found"
        # A message of another conversation of the same session is no message of this one.
        status, refused, _ = await client.request(
            "PATCH", f"/conversation/{other_conversation}", json={"activeMessageId": answer}
        )
        assert status == 404 and "is not a message of this conversation" in refused["message"]
    finally:
        await stranger.close()
    assert len((await read(client, conversation))["messages"]) == 3


async def test_a_conversation_holds_at_most_max_messages() -> None:
    async with start_server(_config(max_messages=5)) as server:
        client = RawClient(server.url)
        try:
            await client.accept()
            conversation = await client.create()
            one = client.message_body("one")
            await post(client, conversation, one)
            await post(client, conversation, client.message_body("two"))  # the root and 4: five
            for body in (client.message_body("three"), retry(one["options"]["id"], "one")):
                status, refused, _ = await client.request("POST", f"/conversation/{conversation}", json=body)
                assert status == 409 and "start a new conversation" in refused["message"], refused
            assert len((await read(client, conversation))["messages"]) == 5
        finally:
            await client.close()
