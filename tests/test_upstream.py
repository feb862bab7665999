"""Upstream backends (tgi, openai), weighted spreading and failover, against real peers over loopback.

The peers are other h2ochat servers (their /generate_stream and /v1 APIs),
llama-cpp-python's own OpenAI-compatible server running SmolLM2, and a small
scripted server for the answers a healthy peer never gives (error statuses,
a stream cut in the middle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from msgspec.structs import replace

from h2ochat import H2o
from h2ochat.protocol.parameters import Parameters
from h2ochat.server import ConfigError, ModelConfig, RunningServer, ServerConfig, load_config, start_server
from h2ochat.server.config import Endpoint, FixedEndpoint, OpenAIEndpoint, TgiEndpoint
from h2ochat.server.edge.http import MODELS
from h2ochat.server.inference.backends.llama import embedded_gguf
from h2ochat.server.inference.backends.openai import openai_parameters
from tests.helpers import events

CHATUI = {"user_message_token": "<|prompt|>", "assistant_message_token": "<|answer|>", "message_end_token": "</s>"}
KENOBI = "Hello there, general Kenobi."
Serve = Callable[..., Awaitable[TestServer]]


def config_with(name: str, *endpoints: Endpoint, tokens: bool = False, **model: Any) -> ServerConfig:
    models = [ModelConfig(name=name, endpoints=list(endpoints), **(CHATUI if tokens else {}), **model)]
    config = ServerConfig(port=0, db=":memory:", models=models)
    return config


@contextlib.asynccontextmanager
async def upstream(tokens: bool = False, **fixed: Any) -> AsyncIterator[RunningServer]:
    """Another h2ochat server, model "up" on the fixed backend."""
    async with start_server(config_with("up", FixedEndpoint(**fixed), tokens=tokens)) as server:
        yield server


async def generate(server: RunningServer, inputs: str = "Hi", **parameters: Any) -> tuple[int, Any]:
    """The downstream's TGI API: (status, body), with details."""
    body = {"inputs": inputs, "parameters": {"details": True, **parameters}}
    async with aiohttp.ClientSession() as http, http.post(server.url + "/generate", json=body) as response:
        return response.status, await response.json()


async def chat(server: RunningServer, text: str, model: str = "down", **options: Any) -> str:
    """The downstream's /v1 API: the answer's text."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], **options}
    async with aiohttp.ClientSession() as http, http.post(server.url + "/v1/chat/completions", json=body) as response:
        answer = await response.json()
        assert response.status == 200, answer
        return str(answer["choices"][0]["message"]["content"])


async def stream_events(server: RunningServer) -> list[dict[str, Any]]:
    """The downstream's /generate_stream: its events."""
    async with aiohttp.ClientSession() as http, http.post(server.url + "/generate_stream", json={"inputs": "Hi"}) as r:
        return events(await r.read())


async def wait_until_idle(server: RunningServer) -> bool:
    """Whether the server's generations all end within two seconds."""
    active = server.app[MODELS].active
    for _ in range(100):
        if not active:
            return True
        await asyncio.sleep(0.02)
    return False


# Configuration ------------------------------------------------------------------------------------

UPSTREAM_TOML = """
[server]
tgi_model = "mistral"

[[models]]
name = "mistral"
cooldown = 5
user_message_token = "[INST]"
assistant_message_token = "[/INST]"
[[models.endpoints]]
type = "openai"
url = "http://gpu-1:8000/v1"
model = "mistralai/Mistral-7B-Instruct-v0.3"
api_key_env = "VLLM_API_KEY"
weight = 3
first_token_timeout = 30
[[models.endpoints]]
type = "tgi"
url = "http://gpu-2:8080"
read_timeout = 20
max_concurrency = 8
"""


def test_upstream_endpoints_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "h2ochat.toml"
    path.write_text(UPSTREAM_TOML)
    config = load_config(path)
    assert config.tgi_model == "mistral"
    model = config.models[0]
    assert model.cooldown == 5
    openai_endpoint, tgi_endpoint = model.endpoints
    assert openai_endpoint == OpenAIEndpoint(
        url="http://gpu-1:8000/v1",
        model="mistralai/Mistral-7B-Instruct-v0.3",
        api_key_env="VLLM_API_KEY",
        weight=3,
        first_token_timeout=30,
    )
    assert tgi_endpoint == TgiEndpoint(url="http://gpu-2:8080", read_timeout=20, max_concurrency=8)
    for typo, complaint in [("read_timeout", "read_timout"), ("http://gpu-2:8080", "gpu-2:8080")]:
        path.write_text(UPSTREAM_TOML.replace(typo, complaint))
        with pytest.raises(ConfigError, match=r"endpoints\[1\]"):
            load_config(path)


# The tgi backend ----------------------------------------------------------------------------------


async def test_tgi_backend_relays_an_upstream_answer() -> None:
    async with (
        upstream(text=KENOBI) as up,
        start_server(config_with("down", TgiEndpoint(url=up.url), tokens=True)) as down,
    ):
        assert await generate(down) == (
            200,
            {
                "generated_text": KENOBI,
                "details": {
                    "finish_reason": "eos_token",
                    "generated_tokens": 5,
                    "seed": None,
                    "prefill": [],
                    "tokens": [
                        {"id": 1, "text": "Hello", "logprob": None, "special": False},
                        {"id": 2, "text": " there,", "logprob": None, "special": False},
                        {"id": 3, "text": " general", "logprob": None, "special": False},
                        {"id": 4, "text": " Kenobi.", "logprob": None, "special": False},
                        {"id": 0, "text": "</s>", "logprob": None, "special": True},
                    ],
                },
            },
        )
        _, body = await generate(down, max_new_tokens=2)
        assert (body["generated_text"], body["details"]["finish_reason"]) == ("Hello there,", "length")
        _, body = await generate(down, stop=["general"])
        assert body["details"]["finish_reason"] == "stop_sequence"
        # The whole chain with the chat protocol's own client at the front.
        assert await H2o.create_async("down", [{"role": "user", "content": "Hi"}], url=down.url) == KENOBI


async def test_tgi_backend_sends_the_prompt_built_with_chatui_tokens() -> None:
    async with upstream(tokens=True, echo=True) as up:  # echoes the prompt it is given
        down_config = config_with("down", TgiEndpoint(url=up.url), tokens=True, preprompt="Be brief.")
        async with start_server(down_config) as down:
            assert await chat(down, "Hi") == "Be brief.<|prompt|>Hi</s><|answer|>"
            # The downstream's own TGI API passes inputs on as the raw prompt.
            _, body = await generate(down, "<|prompt|>raw")
            assert body["generated_text"] == "<|prompt|>raw"


async def test_tgi_endpoint_needs_chatui_tokens() -> None:
    with pytest.raises(ConfigError, match=r"tgi endpoint .* user_message_token"):
        async with start_server(config_with("down", TgiEndpoint(url="http://127.0.0.1:9"))):
            pass


def logged_not_told(told: str, caplog: pytest.LogCaptureFixture, *details: str) -> None:
    """An upstream's failure: the client gets a generic message with a reference, the log the details."""
    reference = re.search(r"\(request ([0-9a-f]{8});", told)
    assert reference is not None, told
    assert not any(detail in told for detail in details) and "http://" not in told
    lines = [record.getMessage() for record in caplog.records if reference.group(1) in record.getMessage()]
    assert lines and all(detail in lines[0] for detail in details), (lines, details)


async def test_tgi_backend_upstream_error_mid_answer(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        upstream(fail_after=2) as up,
        start_server(config_with("down", TgiEndpoint(url=up.url), tokens=True)) as down,
    ):
        parsed = await stream_events(down)
        assert [event["token"]["text"] for event in parsed[:-1]] == ["Hello!", " This"]
        assert parsed[-1]["error_type"] == "generation"
        logged_not_told(parsed[-1]["error"], caplog, "failed on purpose")


# The openai backend -------------------------------------------------------------------------------


async def test_openai_backend_against_h2ochat_v1() -> None:
    async with upstream(text=KENOBI) as up:
        endpoint = OpenAIEndpoint(url=up.url + "/v1", model="up")  # the /v1 spelling works too
        async with start_server(config_with("down", endpoint)) as down:
            status, body = await generate(down)
            assert status == 200 and body["generated_text"] == KENOBI
            # Four text chunks and the finish chunk, which has no text: a special empty token.
            assert body["details"]["finish_reason"] == "eos_token" and body["details"]["generated_tokens"] == 5
            assert body["details"]["tokens"][-1] == {"id": 0, "text": "", "logprob": None, "special": True}
            _, body = await generate(down, max_new_tokens=2)
            assert (body["generated_text"], body["details"]["finish_reason"]) == ("Hello there,", "length")
            assert await chat(down, "Hi") == KENOBI


async def test_openai_backend_api_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    up_config = config_with("up", FixedEndpoint(text=KENOBI))
    up_config = replace(up_config, api_key="k3y")
    async with start_server(up_config) as up:
        endpoint = OpenAIEndpoint(url=up.url, model="up", api_key_env="UPSTREAM_KEY")
        monkeypatch.delenv("UPSTREAM_KEY", raising=False)
        with pytest.raises(ConfigError, match="UPSTREAM_KEY, which is not set"):
            async with start_server(config_with("down", endpoint)):
                pass
        monkeypatch.setenv("UPSTREAM_KEY", "wrong")
        async with start_server(config_with("down", endpoint)) as down:
            status, body = await generate(down)
            assert status == 424
            logged_not_told(body["error"], caplog, "HTTP 401", "API key")
        monkeypatch.setenv("UPSTREAM_KEY", "k3y")
        async with start_server(config_with("down", endpoint)) as down:
            assert (await generate(down))[1]["generated_text"] == KENOBI


def test_openai_parameter_mapping() -> None:
    greedy = Parameters(max_new_tokens=7, temperature=0.5, top_k=3, repetition_penalty=1.3, stop=["x"], seed=1)
    assert openai_parameters(greedy) == {
        "max_tokens": 7,
        "temperature": 0.0,
        "seed": 1,
        "stop": ["x"],
        "repetition_penalty": 1.3,
        "repeat_penalty": 1.3,
    }
    sampled = Parameters(do_sample=True, temperature=0.5, top_p=0.9, top_k=3, truncate=10, typical_p=0.5)
    assert openai_parameters(sampled) == {"temperature": 0.5, "top_p": 0.9, "top_k": 3}
    assert openai_parameters(sampled, extra=False) == {"temperature": 0.5, "top_p": 0.9}
    assert "frequency_penalty" not in openai_parameters(greedy)


class Peer:
    """A scripted upstream: an error status, or an OpenAI stream (cut in the middle if asked)."""

    def __init__(self, status: int = 200, chunks: list[dict[str, Any]] | None = None, cut: bool = False) -> None:
        self.status = status
        self.chunks = chunks if chunks is not None else [chunk("Hi"), chunk(None, "stop")]
        self.cut = cut
        self.bodies: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        if self.status != 200:
            return web.json_response({"error": {"message": f"scripted {self.status}"}}, status=self.status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for item in self.chunks:
            await response.write(b"data: " + json.dumps(item).encode() + b"\n\n")
        if self.cut:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(b"data: [DONE]\n\n")
        return response

    async def serve(self, aiohttp_server: Serve) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        return str((await aiohttp_server(app)).make_url("")).rstrip("/")


def chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion.chunk", "choices": [choice]}


async def test_openai_backend_request_and_finish_chunks(aiohttp_server: Serve) -> None:
    peer = Peer(chunks=[chunk(None), chunk("Hel"), chunk("lo", "length")])
    url = await peer.serve(aiohttp_server)
    async with start_server(config_with("down", OpenAIEndpoint(url=url), preprompt="Be brief.")) as down:
        status, body = await generate(down, max_new_tokens=5, repetition_penalty=1.1, stop=["zz"], seed=9)
        assert status == 200 and body["generated_text"] == "Hello"
        assert body["details"]["finish_reason"] == "length" and body["details"]["generated_tokens"] == 2
    assert peer.bodies == [
        {
            "model": "down",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "stream": True,
            "max_tokens": 5,
            "temperature": 0.0,
            "seed": 9,
            "stop": ["zz"],
            "repetition_penalty": 1.1,
            "repeat_penalty": 1.1,
        }
    ]


@pytest.mark.parametrize(
    ("status", "http_status", "error_type"),
    [
        (400, 422, "validation"),
        (422, 422, "validation"),
        (429, 429, "overloaded"),
        (503, 429, "overloaded"),
        (500, 424, "generation"),
        (401, 424, "generation"),
    ],
)
async def test_upstream_error_statuses_map_to_tgi_error_types(
    aiohttp_server: Serve, status: int, http_status: int, error_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = await Peer(status).serve(aiohttp_server)
    async with start_server(config_with("down", OpenAIEndpoint(url=url))) as down:
        answer_status, body = await generate(down)
        assert (answer_status, body["error_type"]) == (http_status, error_type)
        logged_not_told(body["error"], caplog, f"HTTP {status}", f"scripted {status}")


async def test_upstream_cut_mid_stream_is_incomplete_generation(aiohttp_server: Serve) -> None:
    url = await Peer(chunks=[chunk("Hel"), chunk("lo")], cut=True).serve(aiohttp_server)
    async with start_server(config_with("down", OpenAIEndpoint(url=url))) as down:
        parsed = await stream_events(down)
        assert [event["token"]["text"] for event in parsed[:-1]] == ["Hel", "lo"]
        assert parsed[-1]["error_type"] == "incomplete_generation"


async def test_upstream_error_event_and_done_without_finish_reason(
    aiohttp_server: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    failing = await Peer(chunks=[chunk("Hel"), {"error": {"message": "boom"}}]).serve(aiohttp_server)
    async with start_server(config_with("down", OpenAIEndpoint(url=failing))) as down:
        parsed = await stream_events(down)
        assert parsed[0]["token"]["text"] == "Hel"
        assert parsed[-1]["error_type"] == "generation"
        logged_not_told(parsed[-1]["error"], caplog, "boom")
    terse = await Peer(chunks=[chunk("Hi")]).serve(aiohttp_server)  # [DONE] without a finish reason
    async with start_server(config_with("down", OpenAIEndpoint(url=terse))) as down:
        status, body = await generate(down)
        assert (status, body["generated_text"], body["details"]["finish_reason"]) == (200, "Hi", "eos_token")


async def test_upstream_stalling_between_tokens_is_incomplete_generation(caplog: pytest.LogCaptureFixture) -> None:
    async with upstream(text=KENOBI, delay=1.0) as up:
        endpoint = OpenAIEndpoint(url=up.url, model="up", read_timeout=0.2)
        async with start_server(config_with("down", endpoint)) as down:
            started = time.monotonic()
            status, body = await generate(down)
            assert (status, body["error_type"]) == (500, "incomplete_generation")
            assert time.monotonic() - started < 1
            logged_not_told(body["error"], caplog, "read_timeout")


@pytest.mark.parametrize("kind", ["tgi", "openai"])
async def test_leaving_early_stops_the_upstream_generation(kind: str) -> None:
    async with upstream(tokens=True, text="word " * 500, delay=0.02) as up:
        endpoint: Endpoint = TgiEndpoint(url=up.url) if kind == "tgi" else OpenAIEndpoint(url=up.url, model="up")
        async with start_server(config_with("down", endpoint, tokens=True)) as down:
            url = down.url + "/generate_stream"
            async with aiohttp.ClientSession() as http, http.post(url, json={"inputs": "Hi"}) as response:
                await response.content.readuntil(b"\n\n")
                await response.content.readuntil(b"\n\n")
                assert up.app[MODELS].active  # the upstream is generating
            assert await wait_until_idle(down)
            assert await wait_until_idle(up)


# Several endpoints: weights, cool-down, failover ----------------------------------------------


async def test_requests_are_spread_by_weight() -> None:
    config = config_with("down", FixedEndpoint(text="A", weight=3), FixedEndpoint(text="B", weight=1))
    async with start_server(config) as down:
        answers = await asyncio.gather(*(generate(down) for _ in range(200)))
    count = sum(body["generated_text"] == "A" for _, body in answers)
    # Expected 150; the standard deviation is about 6, so this band fails about once in 10**6 runs.
    assert 120 <= count <= 180, count


async def test_failover_skips_a_stopped_upstream_during_its_cooldown(caplog: pytest.LogCaptureFixture) -> None:
    async with upstream(text="from the dead one") as dead:
        dead_url = dead.url
    async with upstream(text="alive") as alive:
        endpoints = (OpenAIEndpoint(url=dead_url, model="up", weight=100), OpenAIEndpoint(url=alive.url, model="up"))
        async with start_server(config_with("down", *endpoints, cooldown=30)) as down:
            with caplog.at_level(logging.WARNING, logger="h2ochat.server"):
                answers = [await chat(down, "Hi") for _ in range(20)]
            assert answers == ["alive"] * 20
            failures = [r for r in caplog.records if "failed before its first token" in r.getMessage()]
            assert len(failures) == 1 and "could not reach" in failures[0].getMessage()  # then skipped
            assert list(down.app[MODELS].get("down").cooling) == [0]  # type: ignore[union-attr]


async def test_cooldown_ends_and_the_endpoint_is_tried_again(aiohttp_server: Serve) -> None:
    overloaded = Peer(503)
    url = await overloaded.serve(aiohttp_server)
    async with upstream(text="alive") as alive:
        endpoints = (OpenAIEndpoint(url=url, weight=1000), OpenAIEndpoint(url=alive.url, model="up"))
        # Five chats must fit in the cool-down: 2 s leaves room on a loaded machine (0.3 s did not).
        async with start_server(config_with("down", *endpoints, cooldown=2.0)) as down:
            assert [await chat(down, "Hi") for _ in range(5)] == ["alive"] * 5
            assert len(overloaded.bodies) == 1
            await asyncio.sleep(2.05)
            assert await chat(down, "Hi") == "alive"
            assert len(overloaded.bodies) == 2


async def test_first_token_timeout_fails_over() -> None:
    async with upstream(text="slow", first_token_delay=3) as slow, upstream(text="fast") as fast:
        endpoints = (
            OpenAIEndpoint(url=slow.url, model="up", first_token_timeout=0.2, weight=1000),
            TgiEndpoint(url=fast.url),
        )
        async with start_server(config_with("down", *endpoints, tokens=True)) as down:
            started = time.monotonic()
            assert (await generate(down))[1]["generated_text"] == "fast"
            assert time.monotonic() - started < 1.5


async def test_every_endpoint_down_reports_the_last_failure(caplog: pytest.LogCaptureFixture) -> None:
    async with upstream() as gone:
        url = gone.url
    endpoints = (TgiEndpoint(url=url), TgiEndpoint(url=url + "/"))
    async with start_server(config_with("down", *endpoints, tokens=True)) as down:
        status, body = await generate(down)
        assert (status, body["error_type"]) == (424, "generation")
        logged_not_told(body["error"], caplog, "could not reach", url)


# llama-cpp-python's own OpenAI-compatible server ------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
FRANCE = "What is the capital of France?"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with SmolLM2, through the launcher that avoids llama.cpp's crash."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    command = [sys.executable, "-m", "tests.llama_server", "--model", embedded_gguf()]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(url, process, log_path)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"llama_cpp.server did not start within 60 s:\n{log_path.read_text()[-2000:]}")


@pytest.mark.model
async def test_openai_backend_against_llama_cpp_server(llama_server: str, tmp_path: Path) -> None:
    greedy = {"temperature": 0, "max_tokens": 24, "repetition_penalty": 1.0}
    endpoint = OpenAIEndpoint(url=llama_server)
    config = config_with("smol", endpoint, preprompt="You are a helpful assistant.")
    async with start_server(config) as down:
        through_upstream = await chat(down, FRANCE, model="smol", **greedy)
        status, body = await generate(down, "Count from one to ten.", max_new_tokens=3, do_sample=False)
        assert (status, body["details"]["finish_reason"], body["details"]["generated_tokens"]) == (200, "length", 3)
    assert "Paris" in through_upstream
    # The same file run by h2ochat's own backend, same messages, greedy: the same answer, which
    # shows that the parameters (temperature 0, the repetition penalty) reached llama.cpp as meant.
    async with start_server(ServerConfig(port=0, db=str(tmp_path / "smol.db"))) as local:
        assert await chat(local, FRANCE, model="HuggingFaceTB/SmolLM2-135M-Instruct", **greedy) == through_upstream


@pytest.mark.model
async def test_closing_early_stops_llama_cpp_server(llama_server: str) -> None:
    async with start_server(config_with("smol", OpenAIEndpoint(url=llama_server))) as down:
        body = {"inputs": "Write a long story about a robot.", "parameters": {"max_new_tokens": 1000}}
        async with aiohttp.ClientSession() as http:
            async with http.post(down.url + "/generate_stream", json=body) as response:
                await response.content.readuntil(b"\n\n")
            started = time.monotonic()
            # llama_cpp.server answers one request at a time, and the whole story takes about 25 s
            # here: a short answer that comes at once shows that the story stopped when we left.
            answer = await chat(down, "Say hi.", model="smol", max_tokens=4, temperature=0)
        assert answer and time.monotonic() - started < 10
