"""The OpenAI-compatible /v1 API, driven by the official openai SDK over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from msgspec.structs import replace

from h2ochat.server import RunningServer, ServerConfig, start_server
from h2ochat.server.edge.http import MODELS
from tests.helpers import FIXED_MODEL, SMOL, fixed_config

USER: list[Any] = [{"role": "user", "content": "Hi"}]
KENOBI = "Hello there, general Kenobi."


def sdk(server: RunningServer, key: str = "unused") -> openai.AsyncOpenAI:
    # No retries: an error status must reach the test as it is.
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


@pytest.fixture
async def client(fixed_server: RunningServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with sdk(fixed_server) as client:
        yield client


async def test_models_list_and_retrieve(client: openai.AsyncOpenAI) -> None:
    models = await client.models.list()
    assert [model.id for model in models.data] == [FIXED_MODEL]
    assert (await client.models.retrieve(FIXED_MODEL)).owned_by == "h2ochat"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("nope")


async def test_non_streaming(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model=FIXED_MODEL, messages=USER)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == FIXED_MODEL
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", KENOBI, "stop")
    assert completion.usage is not None
    # Four words and the end-of-sequence token; the fixed backend counts the prompt in words.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (1, 5)
    assert completion.usage.total_tokens == 6


async def test_streaming_with_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=FIXED_MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == KENOBI
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 2) + ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert len({chunk.id for chunk in chunks}) == 1


async def test_streaming_without_usage_has_no_usage_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model=FIXED_MODEL, messages=USER, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)


async def test_max_tokens_is_length(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model=FIXED_MODEL, messages=USER, max_tokens=2)
    assert (completion.choices[0].message.content, completion.choices[0].finish_reason) == ("Hello there,", "length")


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("gen", "Hello there, "),
        ([", general", "zzz"], "Hello there"),  # the stop begins inside a token: "," is held back
        (["there, general K"], "Hello "),  # spread over three tokens
        (["Kenobi!"], KENOBI),  # a near miss releases what was held back
    ],
)
async def test_stop_sequences_are_left_out(client: openai.AsyncOpenAI, stop: Any, expected: str) -> None:
    completion = await client.chat.completions.create(model=FIXED_MODEL, messages=USER, stop=stop)
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].finish_reason == "stop"
    stream = await client.chat.completions.create(model=FIXED_MODEL, messages=USER, stop=stop, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == expected


async def test_options_that_cannot_be_honoured_are_refused(client: openai.AsyncOpenAI) -> None:
    create = client.chat.completions.create
    with pytest.raises(openai.BadRequestError, match="repetition_penalty"):
        await create(model=FIXED_MODEL, messages=USER, frequency_penalty=0.5)
    with pytest.raises(openai.BadRequestError, match="n must be 1"):
        await create(model=FIXED_MODEL, messages=USER, n=2)
    with pytest.raises(openai.BadRequestError, match="top_p"):
        await create(model=FIXED_MODEL, messages=USER, top_p=1.5)
    with pytest.raises(openai.BadRequestError) as caught:
        await create(model=FIXED_MODEL, messages=USER, max_tokens="many")  # type: ignore[arg-type]
    assert caught.value.param == "max_tokens"
    # Accepted: greedy, seeded sampling, the extensions, and penalties of zero.
    for options in [
        {"temperature": 0},
        {"temperature": 0.7, "seed": 3, "top_p": 0.9},
        {"extra_body": {"top_k": 5, "repetition_penalty": 1.1}},
        {"frequency_penalty": 0, "presence_penalty": 0, "n": 1, "user": "me"},
    ]:
        completion = await create(model=FIXED_MODEL, messages=USER, **options)
        assert completion.choices[0].message.content == KENOBI


async def test_bad_requests_are_400_in_openai_shape(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model=FIXED_MODEL, messages=[])
    assert caught.value.status_code == 400 and caught.value.param == "messages"
    assert caught.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="role 'tool'"):
        await client.chat.completions.create(
            model=FIXED_MODEL, messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]
        )


async def test_refusals_of_aiohttp_itself_have_the_openai_shape(fixed_server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(fixed_server.url + "/v1/chat/completions") as response:
            body = await response.json()
            assert response.status == 405 and "POST" in response.headers["Allow"]
        assert body["error"]["type"] == "invalid_request_error" and "allowed: POST" in body["error"]["message"]
        async with http.post(fixed_server.url + "/v1/completions", json={}) as response:
            assert response.status == 404 and "No such endpoint" in (await response.json())["error"]["message"]


async def test_unknown_model_is_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="nope", messages=USER)
    assert caught.value.code == "model_not_found" and "'nope'" in caught.value.message


async def test_api_key(raw_client: Any) -> None:
    config = fixed_config(text=KENOBI)
    config = replace(config, api_key="s3cret")
    async with start_server(config) as server:
        for key in ("wrong", "s3cret-and-more"):
            async with sdk(server, key) as client:
                with pytest.raises(openai.AuthenticationError) as caught:
                    await client.chat.completions.create(model=FIXED_MODEL, messages=USER)
                assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
                with pytest.raises(openai.AuthenticationError):
                    await client.models.list()
        async with sdk(server, "s3cret") as client:
            completion = await client.chat.completions.create(model=FIXED_MODEL, messages=USER)
            assert completion.choices[0].message.content == KENOBI
        # Only /v1 is guarded: the chat protocol and the TGI API stay as they are.
        status, _, _ = await raw_client(server.url).request("GET", "/api/models")
        assert status == 200


async def test_system_developer_and_text_parts(client: openai.AsyncOpenAI) -> None:
    async with start_server(fixed_config(echo=True)) as server, sdk(server) as echo:
        completion = await echo.chat.completions.create(
            model=FIXED_MODEL,
            messages=[
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
            ],
        )
        assert completion.choices[0].message.content == "one\ntwo"


async def test_failure_mid_stream_is_an_error_event() -> None:
    async with start_server(fixed_config(fail_after=2)) as server, sdk(server) as client:
        stream = await client.chat.completions.create(model=FIXED_MODEL, messages=USER, stream=True)
        received: list[str] = []
        with pytest.raises(openai.APIError, match="failed on purpose"):
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
        assert "".join(received) == "Hello! This"
        with pytest.raises(openai.InternalServerError, match="failed on purpose"):
            await client.chat.completions.create(model=FIXED_MODEL, messages=USER)


async def test_keepalive_comments_do_not_disturb_the_sdk() -> None:
    config = fixed_config(text=KENOBI, first_token_delay=0.35)
    config = replace(config, keepalive_interval=0.1)
    async with start_server(config) as server:
        async with aiohttp.ClientSession() as http:
            body = {"model": FIXED_MODEL, "messages": USER, "stream": True}
            async with http.post(server.url + "/v1/chat/completions", json=body) as response:
                raw = await response.read()
        assert raw.count(b":\n\n") >= 2 and raw.endswith(b"data: [DONE]\n\n")
        async with sdk(server) as client:
            stream = await client.chat.completions.create(model=FIXED_MODEL, messages=USER, stream=True)
            assert "".join([c.choices[0].delta.content or "" async for c in stream]) == KENOBI


async def test_leaving_a_stream_stops_the_generation() -> None:
    async with start_server(fixed_config(text="word " * 500, delay=0.02)) as server, sdk(server) as client:
        stream = await client.chat.completions.create(model=FIXED_MODEL, messages=USER, stream=True)
        async for chunk in stream:
            if chunk.choices[0].delta.content:
                break
        await stream.close()
        active = server.app[MODELS].active
        for _ in range(100):  # the generation ends within two seconds
            if not active:
                break
            await asyncio.sleep(0.02)
        assert not active


@pytest.mark.model
async def test_real_model_through_the_sdk(tmp_path: Any) -> None:
    async with start_server(ServerConfig(port=0, db=str(tmp_path / "smol.db"))) as server, sdk(server) as client:
        stream = await client.chat.completions.create(
            model=SMOL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"repetition_penalty": 1.0},
        )
        chunks = [chunk async for chunk in stream]
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None and usage.prompt_tokens > 10 and usage.completion_tokens > 3
