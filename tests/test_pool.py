"""The context as one pool (issue 26): each answer sure of its share, a long one free to use the rest.

On the real embedded model. With ``n_ctx = 2048`` for 4 places each answer is sure of 512 cells;
alone, one may hold all 2,048. When new answers need cells a long one has grown into, its growth
gives way, never their shares. And a prompt's start held by any place is shared, not read again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from h2ochat.server import RunningServer, ServerConfig, start_server
from h2ochat.server.config import LlamaEndpoint, default_models
from tests.helpers import SMOL, RawClient, events

pytestmark = pytest.mark.model
FILLER = "Here is a sentence that fills the context with ordinary words. "  # about 13 tokens


def config(n_ctx: int = 2048, parallel: int = 4) -> ServerConfig:
    model = default_models()[0]
    endpoint = model.endpoints[0]
    assert isinstance(endpoint, LlamaEndpoint)
    endpoint.n_ctx, endpoint.parallel = n_ctx, parallel
    return ServerConfig(port=0, db=":memory:", models=[model])


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with start_server(config()) as running:
        yield running


def scheduler_of(server: RunningServer) -> Any:
    from h2ochat.server.edge.http import MODELS

    return server.app[MODELS].runtimes[SMOL].backends[0]._scheduler


async def running(scheduler: Any, count: int) -> None:
    """Until ``count`` answers run in the scheduler (each poll a few ms: the worker admits at its next round)."""
    for _ in range(3000):
        if scheduler.stats()["running"] >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{count} answers never ran together: {scheduler.stats()}")


async def generate(server: RunningServer, inputs: str, **parameters: Any) -> dict[str, Any]:
    body = {"inputs": inputs, "parameters": {"do_sample": False, "details": True, **parameters}}
    async with aiohttp.ClientSession() as http, http.post(server.url + "/generate", json=body) as response:
        answer: dict[str, Any] = await response.json()
        assert response.status == 200, answer
        return answer


async def test_a_long_conversation_alone_uses_the_whole_context(smol_server: RunningServer) -> None:
    """The default server (8,192 cells for 8 places): a conversation of about 6,000 tokens gets its
    answer, with nothing left out, where each answer used to get 1,024 at most."""
    client = RawClient(smol_server.url)
    try:
        await client.accept(SMOL)
        conversation = await client.create(SMOL)
        for turn in range(3):  # about 2,000 tokens a turn; the prompt cache reads only what is new
            text = f"Part {turn + 1} of my notes. " + FILLER * 150
            status, raw, response = await client.message(conversation, text, max_new_tokens=8, details=True)
            assert status == 200, raw
            final = events(raw)[-1]
            assert final.get("generated_text") is not None, final
            assert response.headers["H2ochat-Left-Out"] == "0"
        models = (await client.request("GET", "/api/models"))[1]
        assert models[0]["contextTokens"] == 8192
        stats = scheduler_of(smol_server).stats()
        assert stats["prompt_tokens_read"] + stats["prompt_tokens_reused"] > 6000 + 4000  # three turns' prompts
    finally:
        await client.close()


async def test_new_answers_take_their_share_back_from_a_long_one(server: RunningServer) -> None:
    scheduler = scheduler_of(server)
    long = asyncio.ensure_future(generate(server, FILLER * 90 + "Now count to a thousand.", max_new_tokens=600))
    await running(scheduler, 1)
    (place,) = scheduler._pool.reserved
    grown = scheduler._pool.reserved[place]
    assert grown > 512  # the long answer reserved past its share: the pool had room
    short = [asyncio.ensure_future(generate(server, f"Say hello to person {i}.", max_new_tokens=200)) for i in range(2)]
    await running(scheduler, 3)
    stats = scheduler.stats()
    assert stats["waiting"] == 0  # the short ones did not wait for the long one to end
    assert stats["cells_reserved"] <= 2048  # and the pool never promised more than it has
    assert scheduler._pool.reserved[place] < grown  # the long answer's growth gave way
    assert scheduler._pool.reserved[place] >= 512  # never below its own share
    await asyncio.gather(long, *short)
    assert scheduler.stats()["cells_reserved"] == 0


async def test_a_prompt_answered_before_is_shared_by_every_place_that_asks_again(server: RunningServer) -> None:
    question = FILLER * 20 + "What is the capital of France?"
    await generate(server, question, max_new_tokens=4)
    scheduler = scheduler_of(server)
    before = scheduler.stats()
    answers = await asyncio.gather(*(generate(server, question, max_new_tokens=4) for _ in range(4)))
    after = scheduler.stats()
    read = after["prompt_tokens_read"] - before["prompt_tokens_read"]
    reused = after["prompt_tokens_reused"] - before["prompt_tokens_reused"]
    assert reused > 4 * 250  # each of the four started from the start held in memory
    assert read <= 8  # each read only its last token (its logits give the first answer token)
    assert all(answer["generated_text"] for answer in answers)


async def test_distinct_prompts_asked_again_each_take_back_their_own_place(server: RunningServer) -> None:
    """Four different questions answered at once, then asked again at once (four people pressing
    Retry): each reads only its last token. Every place then holds a question and a longer answer;
    a place taken by its memory's share of the new prompt alone (at least half) would go to none of
    them, and the least recently used one would throw another question's memory away."""
    template = "<|im_start|>user\nTell me about the number {}.<|im_end|>\n<|im_start|>assistant\n"
    questions = [template.format(n) for n in range(4)]
    await asyncio.gather(*(generate(server, question, max_new_tokens=160) for question in questions))
    scheduler = scheduler_of(server)
    before = scheduler.stats()
    # Asked again in the other order: the least recently used place holds another question.
    await asyncio.gather(*(generate(server, question, max_new_tokens=4) for question in reversed(questions)))
    after = scheduler.stats()
    assert after["prompt_tokens_read"] - before["prompt_tokens_read"] == 4  # one token each: its logits
    assert after["prompt_tokens_reused"] - before["prompt_tokens_reused"] >= 4 * 12
