"""h2ochat.Client and h2ochat.AsyncClient: OpenAI's shapes over the h2oGPT chat protocol."""

from __future__ import annotations

from typing import Any

import pytest

import h2ochat
from h2ochat import AsyncClient, Client, GenerationFailed, H2oSession
from h2ochat.protocol.openai import ChatCompletion, ChatCompletionChunk, Usage
from h2ochat.server import RunningServer, start_server
from tests.chatui import ChatUIDouble, answer
from tests.helpers import FIXED_MODEL, fixed_config

USER: list[Any] = [{"role": "user", "content": "Hi"}]
KENOBI = "Hello there, general Kenobi."


def said(completion: ChatCompletion) -> tuple[str | None, str | None]:
    return completion.choices[0].message.content, completion.choices[0].finish_reason


def content(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


async def test_async_client_whole_answer(fixed_server: RunningServer) -> None:
    async with AsyncClient(fixed_server.url) as client:
        completion = await client.chat.completions.create(model=FIXED_MODEL, messages=USER)
    assert isinstance(completion, ChatCompletion) and completion.model == FIXED_MODEL
    assert said(completion) == (KENOBI, "stop") and completion.choices[0].message.role == "assistant"
    # The chat protocol does not tell the prompt's length: 0.
    assert completion.usage == Usage(prompt_tokens=0, completion_tokens=5, total_tokens=5)


async def test_async_client_stream(fixed_server: RunningServer) -> None:
    async with AsyncClient(fixed_server.url) as client:
        stream = await client.chat.completions.create(
            model=FIXED_MODEL, messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert content(chunks) == KENOBI
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert len({chunk.id for chunk in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


async def test_length_and_stop_sequences(fixed_server: RunningServer) -> None:
    async with AsyncClient(fixed_server.url) as client:
        create = client.chat.completions.create
        completion = await create(model=FIXED_MODEL, messages=USER, max_tokens=2)
        assert said(completion) == ("Hello there,", "length")
        # OpenAI's answers leave the stop sequence out (the h2oGPT protocol's keep it).
        completion = await create(model=FIXED_MODEL, messages=USER, stop=", gen")
        assert said(completion) == ("Hello there", "stop")
        stream = await create(model=FIXED_MODEL, messages=USER, stop=["there, general"], stream=True)
        assert content([chunk async for chunk in stream]) == "Hello "


async def test_options_become_h2ogpt_parameters(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    async with AsyncClient(url) as client:
        options = {"max_tokens": 9, "temperature": 0, "seed": 2, "stop": "x", "repetition_penalty": 1.0}
        await client.chat.completions.create(model="m", messages=USER, **options)
        await client.chat.completions.create(messages=USER, temperature=0.7, top_p=0.9, top_k=4)
    first, second = (body["parameters"] for body in double.bodies)
    assert first["max_new_tokens"] == 9 and first["do_sample"] is False and first["seed"] == 2
    assert first["stop"] == ["x"] and first["repetition_penalty"] == 1.0 and first["details"] is True
    assert (second["do_sample"], second["temperature"], second["top_p"], second["top_k"]) == (True, 0.7, 0.9, 4)
    assert double.leaked == set()


async def test_mistakes_raise_at_the_call(fixed_server: RunningServer) -> None:
    async with AsyncClient(fixed_server.url) as client:
        create = client.chat.completions.create
        with pytest.raises(ValueError, match="frequency_penalty"):
            await create(model=FIXED_MODEL, messages=USER, frequency_penalty=1)
        with pytest.raises(ValueError, match="unsupported parameter 'tools'"):
            await create(model=FIXED_MODEL, messages=USER, tools=[])
        with pytest.raises(ValueError, match="messages"):
            await create(model=FIXED_MODEL, messages="Hi")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be 1"):
        Client(fixed_server.url).chat.completions.create(model=FIXED_MODEL, messages=USER, n=2, stream=True)


async def test_failures_raise_h2ochat_errors() -> None:
    async with start_server(fixed_config(fail_after=2)) as server, AsyncClient(server.url) as client:
        with pytest.raises(GenerationFailed, match="failed on purpose"):
            await client.chat.completions.create(model=FIXED_MODEL, messages=USER)
        stream = await client.chat.completions.create(model=FIXED_MODEL, messages=USER, stream=True)
        received: list[ChatCompletionChunk] = []
        with pytest.raises(GenerationFailed) as caught:
            async for chunk in stream:
                received.append(chunk)
        assert content(received) == "Hello! This" == caught.value.partial_text


async def test_leaving_a_stream_early_deletes_its_conversation(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply(answer("a", "b", "c"))
    async with AsyncClient(url, prefetch=False) as client:
        stream = await client.chat.completions.create(messages=USER, stream=True)
        async with stream:
            async for chunk in stream:
                if chunk.choices[0].delta.content:
                    break
        assert double.created and double.leaked == set()


async def test_a_shared_session_stays_open(fixed_server: RunningServer) -> None:
    async with H2oSession(fixed_server.url) as session:
        async with AsyncClient(session=session) as client:
            await client.chat.completions.create(model=FIXED_MODEL, messages=USER)
        assert await session.ask(USER, FIXED_MODEL) == KENOBI  # closing the client left it open
        with pytest.raises(ValueError, match="not both"):
            AsyncClient("http://127.0.0.1:1", session=session)


def test_sync_client(chatui_thread: str) -> None:
    with Client(chatui_thread) as client:
        completion = client.chat.completions.create(model="m", messages=USER)
        assert completion.choices[0].message.content == "Hello world"
        with client.chat.completions.create(model="m", messages=USER, stream=True) as stream:
            chunks = list(stream)
        assert content(chunks) == "Hello world"
        assert chunks[-1].choices[0].finish_reason == "stop"


async def test_sync_client_inside_a_running_loop(chatui_thread: str) -> None:
    client = h2ochat.Client(chatui_thread)
    try:
        stream = client.chat.completions.create(messages=USER, stream=True)
        first = next(stream)
        assert first.choices[0].delta.role == "assistant"
        stream.close()  # leaving early
        assert client.chat.completions.create(messages=USER).choices[0].message.content == "Hello world"
    finally:
        client.close()
