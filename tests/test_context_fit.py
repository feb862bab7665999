"""A chat longer than the model's context (issue 26): the server sends what fits, and says so.

On the real embedded model with a context of 1,024 tokens (``n_ctx = 1024``, one place): the
system prompt and the newest message always go, then as many earlier messages as fit, newest
first; a message that cannot fit alone is refused before it is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from h2ochat.server import RunningServer, ServerConfig, start_server
from h2ochat.server.config import LlamaEndpoint, default_models
from tests.helpers import SMOL, RawClient, branch, events

pytestmark = pytest.mark.model
Client = Callable[[str], RawClient]
SHORT = {"do_sample": False, "repetition_penalty": 1.0, "max_new_tokens": 12}
# About 90 tokens: twenty turns of it are far more than one answer's share of the context.
FACT = "Here is a fact about the number {n}: " + "it is a number that people write and say often. " * 8


@pytest.fixture
async def small_server() -> AsyncIterator[RunningServer]:
    """The embedded model with a context of 1,024 tokens: a chat outgrows it in a few turns."""
    model = default_models()[0]
    endpoint = model.endpoints[0]
    assert isinstance(endpoint, LlamaEndpoint)
    endpoint.n_ctx, endpoint.parallel = 1024, 1
    async with start_server(ServerConfig(port=0, db=":memory:", models=[model])) as server:
        yield server


async def test_a_twenty_turn_chat_keeps_answering(small_server: RunningServer, raw_client: Client) -> None:
    client = raw_client(small_server.url)
    await client.accept(SMOL)
    conversation = await client.create(SMOL)
    left_out = []
    for n in range(20):
        status, raw, response = await client.message(conversation, FACT.format(n=n), **SHORT)
        assert status == 200, raw
        assert events(raw)[-1].get("generated_text") is not None, events(raw)[-1]
        left_out.append(int(response.headers["H2ochat-Left-Out"]))
    assert left_out[0] == 0 and left_out[-1] > 0
    assert left_out == sorted(left_out)  # the chat only grows: ever more of it stays behind
    status, body, _ = await client.request("GET", f"/api/conversation/{conversation}")
    answers = [m for m in body["messages"] if m["role"] == "assistant"]
    assert [m["leftOut"] for m in answers] == left_out
    assert all(m["status"] == "done" for m in answers)


async def test_a_message_too_long_for_the_model_is_refused_before_it_is_stored(
    small_server: RunningServer, raw_client: Client
) -> None:
    client = raw_client(small_server.url)
    await client.accept(SMOL)
    conversation = await client.create(SMOL)
    status, body, _ = await client.message(conversation, "word " * 5000, **SHORT)
    assert status == 400
    assert body["message"].startswith("This message is about ") and body["message"].endswith("Shorten it.")
    assert "this model takes about 768 at a time" in body["message"]
    _, read, _ = await client.request("GET", f"/api/conversation/{conversation}")
    assert branch(read) == []


async def test_the_models_list_publishes_the_token_limits(
    smol_server: RunningServer, small_server: RunningServer, raw_client: Client
) -> None:
    # One answer may hold the whole context (the shared pool); room for an answer (max_new_tokens,
    # at most a quarter of the context) is kept out of what a message may take.
    status, models, _ = await raw_client(smol_server.url).request("GET", "/api/models")
    assert status == 200 and (models[0]["contextTokens"], models[0]["maxInputTokens"]) == (8192, 8192 - 512)
    status, models, _ = await raw_client(small_server.url).request("GET", "/api/models")
    assert status == 200 and (models[0]["contextTokens"], models[0]["maxInputTokens"]) == (1024, 768)
