"""Continue an answer that reached its token limit (``options.is_continue``, as chat-ui 2024 had it).

The answer grows in place: the same message, its text and token count extended, its finish
reason the continuation's. Over real HTTP, on the fixed backend and on the embedded model.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import pytest

from h2ochat.server import RunningServer, start_server
from tests.helpers import SMOL, RawClient, branch, events, fixed_config


def continue_body(answer_id: str, **parameters: Any) -> dict[str, Any]:
    options = {"id": answer_id, "response_id": answer_id, "is_retry": False, "is_continue": True}
    return {"inputs": "", "parameters": parameters, "stream": True, "options": options}


async def first_answer(client: RawClient, conversation: str, **parameters: Any) -> str:
    body = client.message_body("Tell me.", **parameters)
    status, raw, _ = await client.request("POST", f"/conversation/{conversation}", json=body)
    assert status == 200, raw
    return str(body["options"]["response_id"])


async def stored(client: RawClient, conversation: str) -> list[dict[str, Any]]:
    _, body, _ = await client.request("GET", f"/api/conversation/{conversation}")
    return branch(body)


async def test_a_continued_answer_grows_in_place(fixed_server: RunningServer) -> None:
    client = RawClient(fixed_server.url)
    try:
        await client.accept()
        conversation = await client.create()
        answer = await first_answer(client, conversation, max_new_tokens=2)
        before = (await stored(client, conversation))[-1]
        assert (before["finishReason"], before["generatedTokens"]) == ("length", 2)

        status, raw, _ = await client.request(
            "POST", f"/conversation/{conversation}", json=continue_body(answer, max_new_tokens=3, details=True)
        )
        assert status == 200
        final = events(raw)[-1]
        assert final["details"]["finish_reason"] == "length"
        after = await stored(client, conversation)
        assert [m["id"] for m in after][-1] == answer and len(after) == 2  # no new message
        assert after[-1]["content"] == before["content"] + final["generated_text"]
        assert (after[-1]["generatedTokens"], after[-1]["finishReason"]) == (5, "length")
    finally:
        await client.close()


async def test_only_the_last_answer_can_be_continued_and_only_once_at_a_time() -> None:
    async with start_server(fixed_config(delay=0.3)) as server:
        client = RawClient(server.url)
        try:
            await client.accept()
            conversation = await client.create()
            first = await first_answer(client, conversation, max_new_tokens=2)
            messages = await stored(client, conversation)
            url = f"/conversation/{conversation}"

            status, body, _ = await client.request("POST", url, json=continue_body(messages[0]["id"]))
            assert status == 400 and "only such an answer can be continued" in body["message"]
            other = {
                **continue_body(first),
                "options": {**continue_body(first)["options"], "response_id": str(uuid.uuid4())},
            }
            status, body, _ = await client.request("POST", url, json=other)
            assert status == 400 and "must repeat options.id" in body["message"]
            both = {**continue_body(first), "options": {**continue_body(first)["options"], "is_retry": True}}
            status, body, _ = await client.request("POST", url, json=both)
            assert status == 400 and "exclude each other" in body["message"]

            running = asyncio.ensure_future(client.request("POST", url, json=continue_body(first, max_new_tokens=40)))
            await asyncio.sleep(0.5)  # the continuation is streaming
            status, body, _ = await client.request("POST", url, json=continue_body(first))  # the same person, again
            assert status == 409 and "being generated already" in body["message"]
            assert (await running)[0] == 200
        finally:
            await client.close()


@pytest.mark.model
async def test_the_embedded_model_goes_on_from_where_it_stopped(smol_server: RunningServer) -> None:
    client = RawClient(smol_server.url)
    try:
        await client.accept(SMOL)
        conversation = await client.create(SMOL)
        body = client.message_body("Count from 1 to 30, separated by commas.", max_new_tokens=12)
        status, raw, _ = await client.request("POST", f"/conversation/{conversation}", json=body)
        assert status == 200
        answer = body["options"]["response_id"]
        start = (await stored(client, conversation))[-1]["content"]
        status, raw, _ = await client.request(
            "POST", f"/conversation/{conversation}", json=continue_body(answer, max_new_tokens=24)
        )
        assert status == 200, raw
        whole = (await stored(client, conversation))[-1]["content"]
        assert whole.startswith(start) and len(whole) > len(start)
        # Greedy counting carries on past where it stopped, rather than starting over.
        numbers = [int(n) for n in re.findall(r"\d+", whole)]
        assert numbers == sorted(numbers) and max(numbers) > max(int(n) for n in re.findall(r"\d+", start)), whole
    finally:
        await client.close()
