"""gpt4free's own API (the real ``g4f`` package from PyPI) driving ``h2ochat.H2o`` against our server.

g4f is GPL, so it is a test-only peer (the ``g4f`` extra, part of ``test``); nothing in src/ imports it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from h2ochat import H2o
from h2ochat.protocol.tgi import DEFAULT_MODEL, DEFAULT_URL
from h2ochat.providers.defaults import configured_url, server_model, server_url
from h2ochat.server import RunningServer, start_server
from tests.helpers import FIXED_MODEL, fixed_config

g4f = pytest.importorskip("g4f", reason="gpt4free is not installed: pip install -e '.[g4f]' (CI installs it)")
from g4f.client import AsyncClient, Client  # noqa: E402

ANSWER = "Hello there, general Kenobi."
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(autouse=True)
def _quiet_g4f(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # g4f asks PyPI for its latest version on first use; these machines are offline.
    monkeypatch.setattr(g4f.debug, "version_check", False)
    monkeypatch.delenv("H2OCHAT_URL", raising=False)
    monkeypatch.delenv("H2OCHAT_MODEL", raising=False)
    yield


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with start_server(fixed_config(text=ANSWER)) as running:
        yield running


def subclass(url: str, model: str = FIXED_MODEL) -> type[H2o]:
    """What a gpt4free user writes to point the provider elsewhere."""
    return type("MyH2o", (H2o,), {"url": url, "model": model})


def joined(chunks: Any) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks)


async def test_chat_completion_create(server: RunningServer) -> None:
    text = await asyncio.to_thread(g4f.ChatCompletion.create, FIXED_MODEL, MESSAGES, provider=H2o, url=server.url)
    assert text == ANSWER


async def test_client_with_a_subclass(server: RunningServer) -> None:
    client = Client(provider=subclass(server.url))
    response = await asyncio.to_thread(client.chat.completions.create, model="", messages=MESSAGES)
    assert response.choices[0].message.content == ANSWER

    chunks = await asyncio.to_thread(
        lambda: list(client.chat.completions.create(model="", messages=MESSAGES, stream=True))
    )
    assert joined(chunks) == ANSWER


async def test_async_client_streamed_and_not(server: RunningServer) -> None:
    client = AsyncClient(provider=subclass(server.url))
    response = await client.chat.completions.create(model=FIXED_MODEL, messages=MESSAGES)
    assert response.choices[0].message.content == ANSWER
    stream = client.chat.completions.stream(model=FIXED_MODEL, messages=MESSAGES)
    assert joined([chunk async for chunk in stream]) == ANSWER


async def test_max_tokens_reaches_the_server_as_max_new_tokens(server: RunningServer) -> None:
    client = AsyncClient(provider=subclass(server.url))
    response = await client.chat.completions.create(model=FIXED_MODEL, messages=MESSAGES, max_tokens=2)
    text = response.choices[0].message.content
    assert text and ANSWER.startswith(text) and len(text) < len(ANSWER)


async def test_h2o_url_set_on_the_class_itself(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(H2o, "url", server.url)
    monkeypatch.setattr(H2o, "model", FIXED_MODEL)
    assert await H2o.create_async("", MESSAGES) == ANSWER


async def test_environment_applies_when_the_class_sets_nothing(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("H2OCHAT_URL", server.url)
    monkeypatch.setenv("H2OCHAT_MODEL", FIXED_MODEL)
    response = await AsyncClient(provider=H2o).chat.completions.create(model="", messages=MESSAGES)
    assert response.choices[0].message.content == ANSWER


def test_the_order_of_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert server_url() == DEFAULT_URL and configured_url() is None
    assert server_model() == DEFAULT_MODEL
    monkeypatch.setenv("H2OCHAT_URL", "http://env:1")
    monkeypatch.setenv("H2OCHAT_MODEL", "env-model")
    assert server_url(None, DEFAULT_URL) == "http://env:1"  # the historical class value is no choice
    assert server_url(None, "http://class:2") == "http://class:2"
    assert server_url("http://arg:3", "http://class:2") == "http://arg:3"
    assert server_model("", DEFAULT_MODEL) == "env-model"
    assert server_model("", "class-model") == "class-model"
    assert server_model("arg-model", "class-model") == "arg-model"


def test_h2ochat_never_imports_g4f() -> None:
    code = "import sys, h2ochat; h2ochat.H2o.get_dict(); h2ochat.Client; assert 'g4f' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
