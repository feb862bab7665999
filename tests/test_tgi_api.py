"""The TGI-compatible API (/generate, /generate_stream, /), driven by HuggingFace's text_generation client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import text_generation
from msgspec.structs import replace
from text_generation import errors as tgi_errors
from text_generation.types import Response, StreamResponse

from h2ochat.server import ConfigError, ModelConfig, RunningServer, start_server
from h2ochat.server.config import FixedEndpoint
from tests.helpers import events, fixed_config

KENOBI = "Hello there, general Kenobi."
# text_generation 0.7 calls pydantic's deprecated .dict(); the warning is theirs, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


async def post(url: str, path: str, body: Any) -> tuple[int, Any, bytes]:
    async with aiohttp.ClientSession() as http, http.post(url + path, json=body) as response:
        raw = await response.read()
        parsed = await response.json() if response.content_type == "application/json" else None
        return response.status, parsed, raw


@pytest.fixture
async def url(fixed_server: RunningServer) -> AsyncIterator[str]:
    yield fixed_server.url


async def test_client_generate_through_the_root_route(url: str) -> None:
    response = await text_generation.AsyncClient(url).generate("Hi", max_new_tokens=100)
    assert response.generated_text == KENOBI
    details = response.details
    assert (details.finish_reason, details.generated_tokens, details.seed) == ("eos_token", 5, None)
    assert [token.text for token in details.tokens] == ["Hello", " there,", " general", " Kenobi.", "</s>"]
    assert details.tokens[-1].special and details.prefill == []


async def test_client_streams_from_generate_stream_and_root(url: str) -> None:
    for client in (text_generation.AsyncClient(url + "/generate_stream"), text_generation.AsyncClient(url)):
        received = [response async for response in client.generate_stream("Hi", max_new_tokens=2)]
        assert [r.token.text for r in received] == ["Hello", " there,"]
        assert received[-1].generated_text == "Hello there,"
        assert received[-1].details is not None and received[-1].details.finish_reason == "length"


async def test_generate_answers_exactly_as_tgi(url: str) -> None:
    status, body, _ = await post(url, "/generate", {"inputs": "Hi"})
    assert (status, body) == (200, {"generated_text": KENOBI})  # no details unless asked
    parameters = {"details": True, "do_sample": True, "seed": 4, "stop": ["general"], "return_full_text": True}
    status, body, _ = await post(url, "/generate", {"inputs": "Q: ", "parameters": parameters})
    assert status == 200 and list(body) == ["generated_text", "details"]
    response = Response(**body)  # the client's own model of the answer
    assert response.generated_text == "Q: Hello there, general"
    assert (response.details.finish_reason, response.details.seed) == ("stop_sequence", 4)
    status, body, _ = await post(url, "/", {"inputs": "Hi", "stream": False})
    assert (status, body) == (200, [{"generated_text": KENOBI}])


async def test_generate_stream_events_are_tgi_events(url: str) -> None:
    status, _, raw = await post(url, "/generate_stream", {"inputs": "Hi", "parameters": {"details": True}})
    assert status == 200
    parsed = events(raw)
    assert all(StreamResponse(**event) for event in parsed)
    assert parsed[-1]["generated_text"] == KENOBI
    assert parsed[-1]["details"] == {"finish_reason": "eos_token", "generated_tokens": 5, "seed": None}
    status, _, raw = await post(url, "/", {"inputs": "Hi", "stream": True})
    assert events(raw)[-1]["generated_text"] == KENOBI


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"inputs": "  "}, "`inputs` cannot be empty"),
        ({"parameters": {}}, "inputs"),
        ({"inputs": "Hi", "parameters": {"max_new_tokens": 10**6}}, "over this server's limit"),
        ({"inputs": "Hi", "parameters": {"temprature": 1}}, "temprature"),
        ({"inputs": "x" * 100_001}, "at most 100000"),
    ],
)
async def test_validation_errors_are_422(url: str, body: Any, complaint: str) -> None:
    for path in ("/generate", "/generate_stream", "/"):
        status, answer, _ = await post(url, path, body)
        assert status == 422 and answer["error_type"] == "validation" and complaint in answer["error"], answer


async def test_client_raises_the_tgi_errors(url: str) -> None:
    client = text_generation.AsyncClient(url)
    with pytest.raises(tgi_errors.ValidationError, match="over this server's limit"):
        await client.generate("Hi", max_new_tokens=10**6)
    async with start_server(fixed_config(fail_after=2)) as server:
        failing = text_generation.AsyncClient(server.url)
        with pytest.raises(tgi_errors.GenerationError, match="failed on purpose"):
            await failing.generate("Hi")
        status, body, _ = await post(server.url, "/generate", {"inputs": "Hi"})
        assert status == 424 and body["error_type"] == "generation"
        received: list[str] = []
        with pytest.raises(tgi_errors.GenerationError, match="failed on purpose"):
            async for response in failing.generate_stream("Hi"):
                received.append(response.token.text)
        assert received == ["Hello!", " This"]


async def test_tgi_model_is_chosen_in_the_config() -> None:
    config = replace(
        fixed_config(),
        models=[
            ModelConfig(name="first", endpoints=[FixedEndpoint(text="one")]),
            ModelConfig(name="second", endpoints=[FixedEndpoint(text="two")]),
        ],
    )
    async with start_server(config) as server:
        assert (await text_generation.AsyncClient(server.url).generate("Hi")).generated_text == "one"
    config = replace(config, tgi_model="second")
    async with start_server(config) as server:
        assert (await text_generation.AsyncClient(server.url).generate("Hi")).generated_text == "two"
    with pytest.raises(ConfigError, match="tgi_model 'third'"):
        async with start_server(replace(config, tgi_model="third")):
            pass
