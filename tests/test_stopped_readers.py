"""Clients that stop reading, against the real server over loopback (guard.py, streaming.py).

A client that asks for an answer and never reads it must not keep its socket, or a place of the
model, for good. Loopback would absorb about a megabyte per socket, so the server's send buffer is
shrunk (``guard.SEND_BUFFER``, a test-scoped hook) and the clients' receive buffers are the
smallest: an unread answer then stays in the server's own buffers, as over a real network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner
from msgspec.structs import replace
from yarl import URL

import h2ochat.server
from h2ochat.cli import cli
from h2ochat.server import ServerConfig, load_config, start_server
from h2ochat.server.edge import guard
from h2ochat.server.edge.sockets import SLACK
from reliability.process import write_config
from reliability.slowsockets import closed_by_server, stop_reading
from tests.helpers import FIXED_MODEL, RawClient, fixed_config
from tests.test_slow_clients import get, limited

Client = Callable[[str], RawClient]

# The largest of the page's static files (129 KB): far more than the buffers hold.
BIG_FILE = b"GET /static/vendor/highlight.js/highlight.min.js HTTP/1.1\r\nHost: {host}\r\n\r\n"
LONG = " ".join(["x" * 1000] * 400)  # 400 tokens of 1 KB each
BOUND = 20.0  # seconds; only what never happens (a hang) reaches it


@pytest.fixture(autouse=True)
def small_send_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guard, "SEND_BUFFER", 4096)


@pytest.fixture
def readers() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for client in sockets:
        client.close()


async def until_closed(sockets: list[socket.socket]) -> list[bool]:
    """Which of ``sockets`` the server closed, once it has closed them all (or :data:`BOUND` passed)."""
    # Polled: the kernel's connection state has no event to wait on.
    for _ in range(int(BOUND / 0.05)):
        closed = [closed_by_server(client) for client in sockets]
        if all(closed):
            break
        await asyncio.sleep(0.05)
    return closed


async def test_evicted_connections_that_stopped_reading_are_freed_at_once(
    readers: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="h2ochat.server.edge.guard")
    # Past the cap and its slack: once that many sockets stayed open, the server stopped accepting.
    count = 4 + SLACK + 4
    async with start_server(
        limited(max_connections=4, header_timeout=30, keepalive_timeout=30, shutdown_timeout=0.5)
    ) as server:
        for _ in range(count):
            readers.append(await asyncio.wait_for(stop_reading(server.url, BIG_FILE), BOUND))
        assert await get(server.url) == 200  # which evicted one more
        assert all(await until_closed(readers[: count - 3]))
        closed = [closed_by_server(client) for client in readers]
    assert closed == [True] * (count - 3) + [False] * 3
    # The log's count is of connections really closed: the evicted readers, and no more.
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("connections: "))
    assert f" evicted={count - 3} " in summary, summary


async def test_a_head_timeout_frees_a_connection_that_stopped_reading(readers: list[socket.socket]) -> None:
    async with start_server(limited(header_timeout=0.5, keepalive_timeout=30)) as server:
        readers.append(await stop_reading(server.url, BIG_FILE))
        readers[0].send(b"GET /api/mod")  # a later request's head, never finished
        assert await until_closed(readers) == [True]


async def test_the_shutdown_drops_a_connection_whose_client_stopped_reading(readers: list[socket.socket]) -> None:
    # aiohttp's shutdown closes it gracefully, which waits for the client to read the rest.
    async with start_server(limited(shutdown_timeout=0.5)) as server:
        readers.append(await stop_reading(server.url, BIG_FILE))
    assert closed_by_server(readers[0])


async def test_a_stored_answer_whose_reader_stopped_completes_and_the_reader_is_dropped(
    raw_client: Client, readers: list[socket.socket]
) -> None:
    # The run writes to its log, not to the socket: the stopped reader neither slows nor stops it.
    config = replace(fixed_config(text=LONG), welcome_gate=False, write_timeout=0.5)
    async with start_server(config) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        body = json.dumps(client.message_body("Hi", max_new_tokens=400)).encode()
        cookie = client.http.cookie_jar.filter_cookies(URL(server.url))["hf-chat"].value
        head = f"POST /conversation/{conversation} HTTP/1.1\r\nHost: {{host}}\r\nCookie: hf-chat={cookie}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        readers.append(await asyncio.wait_for(stop_reading(server.url, head.encode() + body), BOUND))
        assert await until_closed(readers) == [True]
        for _ in range(int(BOUND / 0.05)):
            _, stored, _ = await client.request("GET", f"/api/conversation/{conversation}")
            if stored["messages"][-1]["status"] != "generating":
                break
            await asyncio.sleep(0.05)
        answer = stored["messages"][-1]
        assert answer["status"] == "done" and answer["content"] == LONG


async def test_a_reattach_stream_whose_reader_stopped_is_dropped(
    raw_client: Client, readers: list[socket.socket]
) -> None:
    # A replay of 400 KB of events to a reader that takes none: write_timeout closes it, as any stream.
    config = replace(fixed_config(text=LONG), welcome_gate=False, write_timeout=0.5)
    async with start_server(config) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        status, raw, response = await client.message(conversation, "Hi", max_new_tokens=400)
        assert status == 200 and len(raw) > 400_000
        run = response.headers["H2ochat-Generation-Id"]
        cookie = client.http.cookie_jar.filter_cookies(URL(server.url))["hf-chat"].value
        path = f"/conversation/{conversation}/stream?generationId={run}&fromSeq=0"
        head = f"GET {path} HTTP/1.1\r\nHost: {{host}}\r\nCookie: hf-chat={cookie}\r\n\r\n"
        readers.append(await asyncio.wait_for(stop_reading(server.url, head.encode()), BOUND))
        assert await until_closed(readers) == [True]
        status, _, _ = await asyncio.wait_for(client.message(conversation, "Again", max_new_tokens=2), BOUND)
        assert status == 200  # the server goes on serving


async def test_a_stream_whose_reader_stopped_ends_and_frees_the_models_place_when_not_resumable(
    raw_client: Client, readers: list[socket.socket]
) -> None:
    # One place: while the stopped stream holds it, nobody else is answered.
    config = replace(fixed_config(text=LONG, max_concurrency=1), welcome_gate=False, write_timeout=0.5)
    config = replace(config, resumable_answers=False)
    async with start_server(config) as server:
        client = raw_client(server.url)
        conversation = await client.create()
        body = json.dumps(client.message_body("Hi", max_new_tokens=400)).encode()
        cookie = client.http.cookie_jar.filter_cookies(URL(server.url))["hf-chat"].value
        head = f"POST /conversation/{conversation} HTTP/1.1\r\nHost: {{host}}\r\nCookie: hf-chat={cookie}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        readers.append(await asyncio.wait_for(stop_reading(server.url, head.encode() + body), BOUND))
        # Another conversation is answered: the stopped stream gave its place back.
        other = await client.create()
        status, raw, _ = await asyncio.wait_for(client.message(other, "Hi", max_new_tokens=2), BOUND)
        assert status == 200 and raw.endswith(b"\n\n")
        _, stored, _ = await client.request("GET", f"/api/conversation/{conversation}")
        answer = stored["messages"][-1]
        assert answer["status"] == "interrupted" and answer["interruption"] == "client disconnected"
        assert 0 < answer["generatedTokens"] < 400
        assert await until_closed(readers) == [True]


async def test_an_openai_stream_whose_reader_stopped_frees_the_place(readers: list[socket.socket]) -> None:
    config = replace(fixed_config(text=LONG, max_concurrency=1), write_timeout=0.5)
    async with start_server(config) as server:
        body = json.dumps({"model": FIXED_MODEL, "stream": True, "messages": [{"role": "user", "content": "Hi"}]})
        head = "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        request = f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode()
        readers.append(await asyncio.wait_for(stop_reading(server.url, request), BOUND))
        status = await asyncio.wait_for(get(server.url, "/api/models"), BOUND)  # the server answers others
        generate = await asyncio.wait_for(_generate(server.url), BOUND)  # and the model too
        assert status == 200 and generate == "x"
        assert await until_closed(readers) == [True]


async def _generate(url: str) -> str:
    async with aiohttp.ClientSession() as http:
        payload = {"inputs": "Hi", "parameters": {"max_new_tokens": 1}}
        async with http.post(url + "/generate", json=payload) as response:
            return str((await response.json())["generated_text"])[:1]


def test_the_write_timeout_option_reaches_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served: list[ServerConfig] = []

    async def serve(config: ServerConfig, ready: Callable[[str], None] | None = None) -> None:
        served.append(config)  # instead of serving

    monkeypatch.setattr(h2ochat.server, "serve", serve)
    config = write_config(tmp_path / "fixed.toml", tmp_path / "fixed.db")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config), "--write-timeout", "2.5"])
    assert result.exit_code == 0, result.output
    assert [config.write_timeout for config in served] == [2.5]
    assert load_config(config).write_timeout == 30.0  # the default
