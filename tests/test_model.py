"""End to end with the real embedded model: H2o -> h2ochat server -> llama-cpp-python -> SmolLM2."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import pytest

from h2ochat import H2o, H2oSession
from h2ochat.server import RunningServer
from tests.helpers import SMOL, RawClient, events

pytestmark = pytest.mark.model
Client = Callable[[str], RawClient]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"do_sample": False, "repetition_penalty": 1.0, "max_new_tokens": 24}


async def test_h2o_streams_a_real_answer(smol_server: RunningServer) -> None:
    result = H2o.create_async_generator(SMOL, FRANCE, url=smol_server.url, details=True, **GREEDY)
    tokens = [token async for token in result]
    assert len(tokens) > 3 and "Paris" in "".join(tokens)
    assert result.finish_reason == "eos_token"
    assert result.generated_tokens == len(tokens) + 1  # the EOS token counts, as in TGI


async def test_greedy_is_deterministic_and_seeded_sampling_reproducible(smol_server: RunningServer) -> None:
    async with H2oSession(smol_server.url) as session:
        greedy = [await session.ask(FRANCE, SMOL, **GREEDY) for _ in range(2)]
        assert greedy[0] == greedy[1]
        sampled = [
            await session.ask(
                FRANCE, SMOL, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, seed=7, max_new_tokens=16
            )
            for _ in range(2)
        ]
        assert sampled[0] == sampled[1]
        other = await session.ask(
            FRANCE, SMOL, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, seed=8, max_new_tokens=16
        )
        assert other != sampled[0]


async def test_max_new_tokens_and_stop_sequences(smol_server: RunningServer) -> None:
    story = [{"role": "user", "content": "Write a long story about a robot."}]
    result = H2o.create_async_generator(
        SMOL, story, url=smol_server.url, details=True, do_sample=False, max_new_tokens=5
    )
    assert len([t async for t in result]) == 5
    assert (result.finish_reason, result.generated_tokens) == ("length", 5)
    result = H2o.create_async_generator(SMOL, FRANCE, url=smol_server.url, details=True, stop=["capital"], **GREEDY)
    text = await result.text()
    assert result.finish_reason == "stop_sequence" and text.endswith("capital")


async def test_truncate_keeps_the_end_of_the_prompt(smol_server: RunningServer, raw_client: Client) -> None:
    client = raw_client(smol_server.url)
    await client.accept(SMOL)
    conversation = await client.create(SMOL)
    long_prompt = "Ignore this filler. " * 600 + "What is the capital of France?"
    status, raw, _ = await client.message(conversation, long_prompt, truncate=64, **GREEDY)
    assert status == 200 and events(raw)[-1]["generated_text"]


async def test_prompt_longer_than_context_is_a_validation_event(smol_server: RunningServer) -> None:
    # /generate stores nothing and fits nothing: the prompt is the client's, whole (the chat
    # protocol refuses such a message before storing it: tests/test_context_fit.py).
    async with aiohttp.ClientSession() as http:
        body = {"inputs": "word " * 9000, "parameters": GREEDY, "stream": True}  # past all 8,192
        async with http.post(f"{smol_server.url}/generate_stream", json=body) as response:
            raw = await response.read()
    last = events(raw)[-1]
    assert last["error_type"] == "validation" and "context" in last["error"]


async def test_queue_is_fair_and_does_not_block_other_endpoints(smol_server: RunningServer, raw_client: Client) -> None:
    story = [{"role": "user", "content": "Count from one to twenty in words."}]
    finished: list[int] = []

    async def ask(index: int) -> None:
        await H2o.create_async(SMOL, story, url=smol_server.url, do_sample=False, max_new_tokens=30)
        finished.append(index)

    tasks = []
    for index in range(3):
        tasks.append(asyncio.ensure_future(ask(index)))
        await asyncio.sleep(0.15)  # arrive in order
    client = raw_client(smol_server.url)
    started = time.monotonic()
    status, models, _ = await client.request("GET", "/api/models")
    assert status == 200 and models[0]["id"] == SMOL
    assert time.monotonic() - started < 0.5  # answered while the model is busy
    await asyncio.gather(*tasks)
    assert finished == [0, 1, 2]


async def test_summarize_with_the_real_model(smol_server: RunningServer, raw_client: Client) -> None:
    client = raw_client(smol_server.url)
    await client.accept(SMOL)
    conversation = await client.create(SMOL)
    await client.message(conversation, "How do I bake bread at home?", **GREEDY)
    status, body, _ = await client.request("POST", f"/conversation/{conversation}/summarize")
    assert status == 200 and 0 < len(body["title"]) <= 100
