"""The server's recommended parameters in the library: H2o, H2oSession, Client, AsyncClient and the CLI.

A real server over loopback, with a model whose recommended parameters differ from the original
provider's defaults; what each generation was asked for is read off the server's backend.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from h2ochat import AsyncClient, Client, H2o, H2oSession
from h2ochat.protocol.parameters import Parameters
from h2ochat.protocol.tgi import DEFAULT_PARAMETERS
from h2ochat.server import ModelConfig, RunningServer, ServerConfig, start_server
from h2ochat.server.config import FixedEndpoint
from h2ochat.server.edge.http import MODELS
from tests.chatui import ChatUIDouble
from tests.helpers import SMOL

MODEL = "test/recommended"
USER: list[Any] = [{"role": "user", "content": "Hi"}]
RECOMMENDED = Parameters(temperature=0.7, top_k=20, repetition_penalty=1.05, max_new_tokens=7)

# (temperature, repetition_penalty, max_new_tokens, truncate, do_sample) as the backend was asked
PROVIDER_DEFAULTS = (0.4, 1.2, 1024, 2048, True)
RECOMMENDED_ONLY = (0.7, 1.05, 7, None, None)  # nothing of the provider's defaults
EXPLICIT = (0.2, 1.05, 3, None, True)  # temperature, max_new_tokens and do_sample given by the caller


def asked(parameters: Parameters) -> tuple[Any, ...]:
    p = parameters
    return (p.temperature, p.repetition_penalty, p.max_new_tokens, p.truncate, p.do_sample)


class Recorded:
    """The parameters of each generation the server ran (the request's over the model's)."""

    def __init__(self, server: RunningServer) -> None:
        self.url = server.url
        self.seen: list[Parameters] = []
        backend = server.app[MODELS].runtimes[MODEL].backends[0]
        generate = backend.generate

        def recording(request: Any) -> Any:
            self.seen.append(request.parameters)
            return generate(request)

        backend.generate = recording

    def asked(self) -> list[tuple[Any, ...]]:
        return [asked(parameters) for parameters in self.seen]


@pytest.fixture
async def server() -> AsyncIterator[Recorded]:
    model = ModelConfig(name=MODEL, parameters=RECOMMENDED, endpoints=[FixedEndpoint(text="a b c d e f g h i j")])
    async with start_server(ServerConfig(port=0, db=":memory:", models=[model])) as running:
        yield Recorded(running)


def models_requests(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.name == "aiohttp.access" and r.getMessage().startswith("GET /api/models"))


async def test_h2o_keeps_the_original_defaults_unless_asked_for_the_recommended(server: Recorded) -> None:
    await H2o.create_async(MODEL, USER, url=server.url)
    assert await H2o.create_async(MODEL, USER, url=server.url, recommended=True) == "a b c d e f g"
    await H2o.create_async(
        MODEL, USER, url=server.url, recommended=True, temperature=0.2, max_new_tokens=3, do_sample=True
    )
    assert server.asked() == [PROVIDER_DEFAULTS, RECOMMENDED_ONLY, EXPLICIT]


async def test_a_session_uses_the_recommended_parameters_and_asks_for_them_once(
    server: Recorded, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with H2oSession(server.url) as session:
        await asyncio.gather(session.ask(USER, MODEL), session.ask(USER, MODEL))
        await session.ask(USER, MODEL, temperature=0.2, max_new_tokens=3, do_sample=True)
        await H2o.create_async(MODEL, USER, session=session)  # the session's choice
    assert models_requests(caplog) == 1
    async with H2oSession(server.url, recommended=False) as session:
        await session.ask(USER, MODEL)
    assert server.asked() == [RECOMMENDED_ONLY, RECOMMENDED_ONLY, EXPLICIT, RECOMMENDED_ONLY, PROVIDER_DEFAULTS]


async def test_async_client_uses_the_recommended_parameters_under_its_options(server: Recorded) -> None:
    async with AsyncClient(server.url) as client:
        plain = await client.chat.completions.create(model=MODEL, messages=USER)
        await client.chat.completions.create(model=MODEL, messages=USER, temperature=0.2, max_tokens=3)
    async with AsyncClient(server.url, recommended=False) as client:
        await client.chat.completions.create(model=MODEL, messages=USER)
    assert plain.usage is not None and plain.usage.completion_tokens == 7
    assert server.asked() == [RECOMMENDED_ONLY, EXPLICIT, PROVIDER_DEFAULTS]


async def test_client_uses_the_recommended_parameters_under_its_options(server: Recorded) -> None:
    def calls() -> None:  # on a thread: the synchronous client must not block the server's loop
        with Client(server.url) as client:
            client.chat.completions.create(model=MODEL, messages=USER)
            client.chat.completions.create(model=MODEL, messages=USER, temperature=0.2, max_tokens=3)

    await asyncio.to_thread(calls)
    assert server.asked() == [RECOMMENDED_ONLY, EXPLICIT]


async def test_the_command_line_takes_the_same_parameters_as_the_library(server: Recorded) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("H2OCHAT_")}
    command = [sys.executable, "-m", "h2ochat", "ask", "--url", server.url, "-p", "temperature=0.2", "Hi"]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "a b c d e f g"
    assert server.asked() == [(0.2, 1.05, 7, None, None)]


async def test_a_server_without_a_models_list_gets_the_provider_defaults(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    async with H2oSession(url) as session:
        await session.ask(USER, "m")
        await session.ask(USER, "m")
    assert [path for _, path, _ in double.requests].count("/api/models") == 1  # its 404 is kept
    assert [body["parameters"] for body in double.bodies] == [DEFAULT_PARAMETERS, DEFAULT_PARAMETERS]


@pytest.mark.model
async def test_client_with_defaults_answers_the_embedded_model_well(smol_server: RunningServer) -> None:
    def ask() -> list[str | None]:
        question = [{"role": "user", "content": "What is the capital of France?"}]
        with Client(smol_server.url) as client:
            return [
                client.chat.completions.create(model=SMOL, messages=question).choices[0].message.content
                for _ in range(3)
            ]

    answers = await asyncio.to_thread(ask)
    assert "Paris" in (answers[0] or "")
    # The same answer each time: the model's greedy decoding, not the provider's sampling at 0.4.
    assert len(set(answers)) == 1, answers


async def test_chat_takes_the_recommended_parameters_of_the_model_it_switches_to() -> None:
    models = [
        ModelConfig(
            name=name, parameters=Parameters(max_new_tokens=tokens), endpoints=[FixedEndpoint(text="a b c d e f")]
        )
        for name, tokens in (("first", 2), ("second", 4))
    ]
    async with start_server(ServerConfig(port=0, db=":memory:", models=models)) as running:
        env = {k: v for k, v in os.environ.items() if not k.startswith("H2OCHAT_")}
        command = [sys.executable, "-m", "h2ochat", "chat", "--url", running.url]
        lines = "hi\n/model second\nhi\n/exit\n"
        result = await asyncio.to_thread(
            subprocess.run, command, input=lines, capture_output=True, text=True, timeout=60, env=env
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["a b", "Model: second", "a b c d"]
