"""The server's endpoints over real loopback HTTP, with the deterministic fixed backend."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from msgspec.structs import replace

from h2ochat import H2o, H2oSession, IncompleteGeneration, ModelOverloaded
from h2ochat.protocol.errors import GenerationFailed
from h2ochat.server import ModelConfig, RunningServer, start_server
from h2ochat.server.config import FixedEndpoint
from tests.helpers import FIXED_MODEL, RawClient, branch, events, fixed_config

Client = Callable[[str], RawClient]
USER = [{"role": "user", "content": "Hi"}]


async def ready(raw_client: Client, server: RunningServer) -> tuple[RawClient, str]:
    client = raw_client(server.url)
    await client.accept()
    return client, await client.create()


# Sessions and gates ---------------------------------------------------------------------------


async def test_cookie_issued_refreshed_and_attributes(fixed_server: RunningServer, raw_client: Client) -> None:
    client = raw_client(fixed_server.url)
    _, _, read = await client.request("GET", "/api/conversations")
    assert "Set-Cookie" not in read.headers  # a read issues no session
    _, _, first = await client.request("POST", "/settings", data={"ethicsModalAccepted": "true"})
    cookie = first.headers["Set-Cookie"]
    assert re.fullmatch(r"hf-chat=[A-Za-z0-9_-]{43}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax", cookie)
    _, _, second = await client.request("GET", "/api/conversations")
    assert second.headers["Set-Cookie"] == cookie  # the same session, refreshed


async def test_settings_json_and_303_answers(fixed_server: RawClient, raw_client: Client) -> None:
    client = raw_client(fixed_server.url)
    form = {"ethicsModalAccepted": "true", "activeModel": FIXED_MODEL}
    status, body, _ = await client.request("POST", "/settings", data=form)
    assert (status, body) == (200, {"type": "redirect", "status": 303, "location": fixed_server.url + "/"})
    status, _, response = await client.request("POST", "/settings", data=form, headers={"Accept": "text/html"})
    assert status == 303 and response.headers["Location"] == fixed_server.url + "/"


async def test_settings_unknown_model_lists_models(fixed_server: RunningServer, raw_client: Client) -> None:
    status, body, _ = await raw_client(fixed_server.url).request("POST", "/settings", data={"activeModel": "nope"})
    assert status == 400 and "'nope'" in body["message"] and FIXED_MODEL in body["message"]


@pytest.mark.parametrize(
    ("referer", "message"),
    [
        (None, "Non-JSON form requests need to have a referer"),
        ("http://evil.example/", "Invalid referer for POST request"),
    ],
)
async def test_form_posts_need_same_origin_referer(
    fixed_server: RunningServer, raw_client: Client, referer: str | None, message: str
) -> None:
    client = raw_client(fixed_server.url)
    headers = {} if referer is None else {"Referer": referer}
    async with client.http.post(fixed_server.url + "/settings", data={"a": "b"}, headers=headers) as response:
        assert response.status == 403
        assert await response.json() == {"message": message}


async def test_welcome_gate(fixed_server: RunningServer, raw_client: Client) -> None:
    """2023's message post waits for the settings step; creating (which today's clients do without
    one) does not."""
    client = raw_client(fixed_server.url)
    conversation = await client.create()
    status, body, _ = await client.message(conversation, "hello")
    assert (status, body) == (405, {"error": "You need to accept the welcome modal first"})
    await client.accept()
    status, body, _ = await client.message(conversation, "hello")
    assert status == 200, body


async def test_welcome_gate_can_be_turned_off(raw_client: Client) -> None:
    config = fixed_config()
    config = replace(config, welcome_gate=False)
    async with start_server(config) as server:
        assert len(await raw_client(server.url).create()) == 24


# Conversations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"{not json", "JSON"),
        (b"{}", "model"),
        (b'{"model": 3}', "model"),
        (b'{"model": "nope"}', "Unknown model 'nope'"),
        (b'{"model": "test/fixed", "extra": 1}', "extra"),
    ],
)
async def test_create_conversation_refusals(
    fixed_server: RunningServer, raw_client: Client, body: bytes, complaint: str
) -> None:
    client = raw_client(fixed_server.url)
    await client.accept()
    status, answer, _ = await client.request(
        "POST", "/conversation", data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and complaint in answer["message"] and FIXED_MODEL in answer["message"]


async def test_stream_is_byte_exact_tgi(fixed_server: RunningServer, raw_client: Client) -> None:
    client, conversation = await ready(raw_client, fixed_server)
    status, raw, response = await client.message(conversation, "Hi")
    assert status == 200 and response.headers["Content-Type"] == "text/event-stream"
    assert re.fullmatch(rb"(data:\{[^\n]*\}\n\n)+", raw)
    parsed = events(raw)
    assert [e["token"]["text"] for e in parsed] == ["Hello", " there,", " general", " Kenobi.", "</s>"]
    assert all(e["generated_text"] is None and e["details"] is None for e in parsed[:-1])
    assert parsed[-1]["token"]["special"] is True
    assert parsed[-1]["generated_text"] == "Hello there, general Kenobi."
    assert parsed[-1]["details"] is None
    assert list(parsed[0]) == ["token", "generated_text", "details"]
    assert list(parsed[0]["token"]) == ["id", "text", "logprob", "special"]


async def test_details_when_asked(fixed_server: RunningServer, raw_client: Client) -> None:
    client, conversation = await ready(raw_client, fixed_server)
    _, raw, _ = await client.message(conversation, "Hi", details=True, max_new_tokens=2)
    final = events(raw)[-1]
    assert final["details"] == {"finish_reason": "length", "generated_tokens": 2, "seed": None}
    assert final["generated_text"] == "Hello there,"


async def test_stop_sequence_and_return_full_text(fixed_server: RunningServer, raw_client: Client) -> None:
    client, conversation = await ready(raw_client, fixed_server)
    _, raw, _ = await client.message(conversation, "Q: ", details=True, stop=["gen"], return_full_text=True)
    final = events(raw)[-1]
    assert final["details"]["finish_reason"] == "stop_sequence"
    assert final["generated_text"] == "Q: Hello there, general"


async def test_sampling_reports_its_seed(fixed_server: RunningServer, raw_client: Client) -> None:
    client, conversation = await ready(raw_client, fixed_server)
    _, raw, _ = await client.message(conversation, "Hi", details=True, do_sample=True, seed=42)
    assert events(raw)[-1]["details"]["seed"] == 42
    _, raw, _ = await client.message(conversation, "Hi", details=True, do_sample=True)
    assert isinstance(events(raw)[-1]["details"]["seed"], int)


@pytest.mark.parametrize(
    ("mutate", "status", "complaint"),
    [
        (lambda b: b.update(inputs="   "), 400, "inputs is empty"),
        (lambda b: b.pop("options"), 400, "options is required"),
        (lambda b: b["options"].update(id="not-a-uuid"), 400, "options.id must be a UUID"),
        (lambda b: b["options"].update(response_id=7), 400, "Expected `str`"),
        (lambda b: b.update(inputs=5), 400, "Expected `str`, got `int` - at `$.inputs`"),
        (lambda b: b["parameters"].update(temperature=0), 400, "parameters.temperature"),
        (lambda b: b["parameters"].update(top_p=1.5), 400, "parameters.top_p"),
        (lambda b: b["parameters"].update(max_new_tokens=10**6), 400, "over this server's limit"),
        (lambda b: b["parameters"].update(temprature=1), 400, "temprature"),
        (lambda b: b.update(parameters=[1]), 400, "parameters"),
        (lambda b: b.update(inputs="x" * 100_001), 400, "at most 100000"),
    ],
)
async def test_message_refusals_come_before_generation(
    fixed_server: RunningServer, raw_client: Client, mutate: Callable[[dict], object], status: int, complaint: str
) -> None:
    client, conversation = await ready(raw_client, fixed_server)
    body = client.message_body("Hi")
    mutate(body)
    answer_status, answer, _ = await client.request("POST", f"/conversation/{conversation}", json=body)
    assert answer_status == status and complaint in answer["message"], answer
    _, stored, _ = await client.request("GET", f"/api/conversation/{conversation}")
    assert branch(stored) == []


async def test_message_to_missing_conversation_is_404(fixed_server: RunningServer, raw_client: Client) -> None:
    client, _ = await ready(raw_client, fixed_server)
    status, body, _ = await client.message("0" * 24, "Hi")
    assert (status, body) == (404, {"message": "Conversation not found"})


async def test_sessions_cannot_see_or_touch_each_other(fixed_server: RunningServer, raw_client: Client) -> None:
    alice, conversation = await ready(raw_client, fixed_server)
    mallory = raw_client(fixed_server.url)
    await mallory.accept()
    missing = (404, {"message": "Conversation not found"})
    for method, path, kwargs in [
        ("POST", f"/conversation/{conversation}", {"json": mallory.message_body("Hi")}),
        ("DELETE", f"/conversation/{conversation}", {}),
        ("PATCH", f"/conversation/{conversation}", {"json": {"title": "mine"}}),
        ("POST", f"/conversation/{conversation}/stop-generating", {}),
        ("POST", f"/conversation/{conversation}/summarize", {}),
        ("GET", f"/api/conversation/{conversation}", {}),
    ]:
        status, body, _ = await mallory.request(method, path, **kwargs)
        assert (status, body) == missing, (method, path)
    assert (await mallory.request("GET", "/api/conversations"))[1] == []
    status, listed, _ = await alice.request("GET", "/api/conversations")
    assert [c["id"] for c in listed] == [conversation]


async def test_delete_patch_and_read_api(fixed_server: RunningServer, raw_client: Client) -> None:
    client, conversation = await ready(raw_client, fixed_server)
    await client.message(conversation, "Hi")
    assert (await client.request("PATCH", f"/conversation/{conversation}", json={"title": "Greetings"}))[0] == 200
    for title in ["", "x" * 101]:
        status, body, _ = await client.request("PATCH", f"/conversation/{conversation}", json={"title": title})
        assert status == 400 and "1 to 100" in body["message"]
    status, stored, _ = await client.request("GET", f"/api/conversation/{conversation}")
    assert stored["title"] == "Greetings" and stored["model"] == FIXED_MODEL
    assert [(m["role"], m["content"], m["status"]) for m in branch(stored)] == [
        ("user", "Hi", "done"),
        ("assistant", "Hello there, general Kenobi.", "done"),
    ]
    assert all(m["id"] and m["createdAt"].endswith("Z") for m in branch(stored))
    status, body, _ = await client.request("DELETE", f"/conversation/{conversation}")
    assert (status, body) == (200, b"")
    assert (await client.request("DELETE", f"/conversation/{conversation}"))[0] == 404
    assert (await client.request("GET", f"/api/conversation/{conversation}"))[0] == 404


async def test_models_endpoint(fixed_server: RunningServer, raw_client: Client) -> None:
    status, models, _ = await raw_client(fixed_server.url).request("GET", "/api/models")
    assert status == 200 and [m["id"] for m in models] == [FIXED_MODEL]


async def test_summarize_sets_the_title(fixed_server: RunningServer, raw_client: Client) -> None:
    client, conversation = await ready(raw_client, fixed_server)
    assert (await client.request("POST", f"/conversation/{conversation}/summarize"))[0] == 400  # nothing yet
    await client.message(conversation, "Hi")
    status, body, _ = await client.request("POST", f"/conversation/{conversation}/summarize")
    assert status == 200 and body == {"title": "Hello there, general Kenobi"}
    assert (await client.request("GET", f"/api/conversation/{conversation}"))[1]["title"] == body["title"]


async def test_a_rename_while_the_title_is_written_is_kept(raw_client: Client) -> None:
    async with start_server(fixed_config(text="A generated title", delay=0.05)) as server:
        client, conversation = await ready(raw_client, server)
        await client.message(conversation, "Hi")
        summarizing = asyncio.ensure_future(client.request("POST", f"/conversation/{conversation}/summarize"))
        await asyncio.sleep(0.05)  # the model is writing the title (three tokens, 0.05 s each)
        path = f"/conversation/{conversation}"
        assert (await client.request("PATCH", path, json={"title": "Mine"}))[0] == 200
        status, body, _ = await summarizing
        assert status == 200 and body == {"title": "Mine"}
        assert (await client.request("GET", f"/api/conversation/{conversation}"))[1]["title"] == "Mine"


async def test_history_and_retry(raw_client: Client) -> None:
    async with start_server(fixed_config(echo=True)) as server:
        client, conversation = await ready(raw_client, server)
        first = client.message_body("one")
        await client.request("POST", f"/conversation/{conversation}", json=first)
        await client.message(conversation, "two")
        reused = client.message_body("again")
        reused["options"]["id"] = first["options"]["id"]
        status, body, _ = await client.request("POST", f"/conversation/{conversation}", json=reused)
        assert status == 400 and "is_retry" in body["message"]
        reused["options"]["is_retry"] = True
        _, raw, _ = await client.request("POST", f"/conversation/{conversation}", json=reused)
        assert events(raw)[-1]["generated_text"] == "again"
        _, stored, _ = await client.request("GET", f"/api/conversation/{conversation}")
        assert [m["content"] for m in branch(stored)] == ["again", "again"]
        # The edit went beside the first question: the old branch, "one" and all after it, stays.
        first_id = first["options"]["id"]
        edited = branch(stored)[0]
        assert edited["id"] != first_id and edited["parentId"] == stored["rootMessageId"]
        root = next(m for m in stored["messages"] if m["id"] == stored["rootMessageId"])
        assert root["children"] == [first_id, edited["id"]]
        assert [m["content"] for m in stored["messages"]] == ["", "one", "one", "two", "two", "again", "again"]


# Errors, limits and the shape of every refusal ------------------------------------------------


async def test_unknown_path_method_and_big_body_are_json(fixed_server: RunningServer, raw_client: Client) -> None:
    client = raw_client(fixed_server.url)
    status, body, _ = await client.request("GET", "/nowhere")
    assert status == 404 and "No such endpoint" in body["message"]
    status, body, response = await client.request("PUT", "/settings")
    assert status == 405 and "POST" in body["message"] and "POST" in response.headers["Allow"]
    await client.accept()
    big = io.BytesIO(b'{"model": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    status, body, _ = await client.request(
        "POST", "/conversation", data=big, headers={"Content-Type": "application/json"}
    )
    assert status == 413 and "at most 1048576 bytes" in body["message"]
    status, body, _ = await client.request("POST", "/settings", data=io.BytesIO(b"x"))
    assert status == 415 and "form" in body["message"]


async def test_rate_limit_answers_429_with_retry_after(raw_client: Client) -> None:
    config = fixed_config()
    config = replace(config, rate_limit_per_minute=2)
    async with start_server(config) as server:
        client, conversation = await ready(raw_client, server)
        assert (await client.message(conversation, "1"))[0] == 200
        assert (await client.message(conversation, "2"))[0] == 200
        status, body, response = await client.message(conversation, "3")
        assert status == 429 and "2 per minute" in body["message"]
        assert 1 <= int(response.headers["Retry-After"]) <= 61


async def test_model_gone_after_restart_is_410(tmp_path: Path, raw_client: Client) -> None:
    db = str(tmp_path / "h2ochat.db")
    async with start_server(fixed_config(db)) as server:
        client, conversation = await ready(raw_client, server)
        await client.message(conversation, "Hi")
    port = int(server.url.rsplit(":", 1)[1])
    config = replace(fixed_config(db), port=port, models=[ModelConfig(name="other", endpoints=[FixedEndpoint()])])
    async with start_server(config):
        status, body, _ = await client.message(conversation, "Hi")
        assert status == 410 and "no longer served" in body["message"]


async def test_conversations_survive_a_restart(tmp_path: Path, raw_client: Client) -> None:
    db = str(tmp_path / "h2ochat.db")
    config = fixed_config(db)
    async with start_server(config) as server:
        client, conversation = await ready(raw_client, server)
        await client.message(conversation, "Hi")
    config = replace(config, port=int(server.url.rsplit(":", 1)[1]))
    async with start_server(config):
        _, stored, _ = await client.request("GET", f"/api/conversation/{conversation}")
        assert [m["content"] for m in branch(stored)] == [
            "Hi",
            "Hello! This answer comes from the fixed test backend.",
        ]
        assert (await client.message(conversation, "Again"))[0] == 200  # the session is remembered too


# Streaming behaviour --------------------------------------------------------------------------


async def test_keepalive_comment_while_waiting(raw_client: Client) -> None:
    config = fixed_config(first_token_delay=0.35)
    config = replace(config, keepalive_interval=0.1)
    async with start_server(config) as server:
        client, conversation = await ready(raw_client, server)
        _, raw, _ = await client.message(conversation, "Hi")
        assert raw.startswith(b":\n\n") and raw.count(b":\n\n") >= 2
        assert events(raw)[-1]["generated_text"]


async def test_client_disconnect_leaves_the_answer_to_complete(raw_client: Client) -> None:
    async with start_server(fixed_config(text="word " * 100, delay=0.005)) as server:
        client, conversation = await ready(raw_client, server)
        async with client.http.post(
            f"{server.url}/conversation/{conversation}", json=client.message_body("Hi")
        ) as response:
            await response.content.readuntil(b"\n\n")
            await response.content.readuntil(b"\n\n")
        stored = await wait_for_answer(client, conversation, timeout=10)
        assert stored["status"] == "done" and stored["interruption"] is None
        assert stored["content"] == "word " * 100 and stored["finishReason"] == "eos_token"


async def test_client_disconnect_stops_generation_when_answers_are_not_resumable(raw_client: Client) -> None:
    config = replace(fixed_config(text="word " * 500, delay=0.02), resumable_answers=False)
    async with start_server(config) as server:
        client, conversation = await ready(raw_client, server)
        async with client.http.post(
            f"{server.url}/conversation/{conversation}", json=client.message_body("Hi")
        ) as response:
            await response.content.readuntil(b"\n\n")
            await response.content.readuntil(b"\n\n")
        stored = await wait_for_answer(client, conversation)
        assert stored["status"] == "interrupted" and stored["interruption"] == "client disconnected"
        assert 2 <= stored["generatedTokens"] <= 6
        assert stored["content"].startswith("word word")


async def test_the_text_of_an_answer_in_progress_is_saved_as_it_grows(raw_client: Client) -> None:
    config = fixed_config(text="word " * 500, delay=0.02)
    config = replace(config, checkpoint_interval=0.1)
    async with start_server(config) as server:
        client, conversation = await ready(raw_client, server)
        stream = asyncio.ensure_future(client.message(conversation, "Hi"))
        await asyncio.sleep(0.5)
        _, stored, _ = await client.request("GET", f"/api/conversation/{conversation}")
        answer = stored["messages"][-1]
        assert answer["status"] == "generating" and answer["content"].startswith("word word")
        assert 0 < answer["generatedTokens"] < 500
        await client.request("POST", f"/conversation/{conversation}/stop-generating")
        await stream


async def test_stop_generating(raw_client: Client) -> None:
    async with start_server(fixed_config(text="word " * 500, delay=0.02)) as server:
        client, conversation = await ready(raw_client, server)
        stream = asyncio.ensure_future(client.message(conversation, "Hi"))
        await asyncio.sleep(0.2)
        assert (await client.request("POST", f"/conversation/{conversation}/stop-generating"))[0] == 200
        started = time.monotonic()
        _, raw, _ = await stream
        assert time.monotonic() - started < 1
        last = events(raw)[-1]
        assert last == {
            "error": "generation stopped: stop-generating was requested",
            "error_type": "incomplete_generation",
        }
        stored = await wait_for_answer(client, conversation)
        assert stored["status"] == "interrupted" and stored["generatedTokens"] < 30


async def test_backend_failure_mid_answer(raw_client: Client) -> None:
    async with start_server(fixed_config(fail_after=2)) as server:
        client, conversation = await ready(raw_client, server)
        _, raw, _ = await client.message(conversation, "Hi")
        parsed = events(raw)
        assert [e["token"]["text"] for e in parsed[:-1]] == ["Hello!", " This"]
        assert parsed[-1]["error_type"] == "generation" and "failed on purpose" in parsed[-1]["error"]
        stored = await wait_for_answer(client, conversation)
        assert stored["status"] == "interrupted" and stored["content"] == "Hello! This"
        with pytest.raises(GenerationFailed, match="failed on purpose") as caught:
            await H2o.create_async(FIXED_MODEL, USER, url=server.url)
        assert caught.value.partial_text == "Hello! This"


async def test_shutdown_ends_open_streams_with_an_error_event(raw_client: Client) -> None:
    server_cm = start_server(fixed_config(text="word " * 500, delay=0.02))
    server = await server_cm.__aenter__()
    client, conversation = await ready(raw_client, server)
    stream = asyncio.ensure_future(client.message(conversation, "Hi"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await server_cm.__aexit__(None, None, None)
    assert time.monotonic() - started < 5
    _, raw, _ = await stream
    assert events(raw)[-1] == {
        "error": "generation stopped: the server is shutting down",
        "error_type": "incomplete_generation",
    }


async def test_fifty_concurrent_conversations() -> None:
    # One session's 50 answers at once: past the default max_running_answers (3), so no limit here.
    config = replace(fixed_config(text="Hello there, general Kenobi."), max_running_answers=0)
    async with start_server(config) as server, H2oSession(server.url, prefetch=False) as session:
        answers = await asyncio.gather(
            *(session.ask([{"role": "user", "content": f"#{i}"}], FIXED_MODEL) for i in range(50))
        )
    assert answers == ["Hello there, general Kenobi."] * 50


async def test_h2o_errors_from_server_events(raw_client: Client) -> None:
    server_config = fixed_config(text="word " * 500, delay=0.02)
    async with start_server(server_config) as server, H2oSession(server.url) as session:
        result = session.stream(USER, FIXED_MODEL)
        assert await result.__anext__() == "word"
        await raw_stop(session, server, result.conversation_id)
        with pytest.raises(IncompleteGeneration) as caught:
            async for _ in result:
                pass
        assert caught.value.partial_text.startswith("word")
    assert ModelOverloaded.error_type == "overloaded"


async def raw_stop(session: H2oSession, server: RunningServer, conversation: str | None) -> None:
    # The stop request must come from the same session (cookie) as the stream.
    http = session._http.client()
    async with http.post(f"{server.url}/conversation/{conversation}/stop-generating") as response:
        assert response.status == 200


async def wait_for_answer(client: RawClient, conversation: str, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, stored, _ = await client.request("GET", f"/api/conversation/{conversation}")
        answer = stored["messages"][-1]
        if answer["status"] != "generating" or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.02)


def test_aiohttp_version_has_request_keys() -> None:
    assert hasattr(aiohttp.web, "RequestKey")


async def test_one_log_line_per_request_and_per_generation(
    fixed_server: RunningServer, raw_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client, conversation = await ready(raw_client, fixed_server)
    await client.message(conversation, "Hi")
    await client.request("GET", "/api/models")  # the stream's line is written when its handler returns
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert access[-1].startswith("GET /api/models 200 ")
    assert re.fullmatch(r"POST /settings 200 \d+\.\dms", access[0])
    streams = [line for line in access if line.startswith("POST /conversation/")]
    assert len(streams) == 1 and re.fullmatch(r"POST /conversation/[0-9a-f]{24} 200 \d+\.\dms", streams[0])
    generated = [r.getMessage() for r in caplog.records if r.getMessage().startswith("generated ")]
    assert re.fullmatch(
        r"generated model=test/fixed tokens=5 seconds=\d+\.\d\d tokens/s=\d+\.\d end=eos_token", generated[0]
    )
