"""Slow and idle clients against the real server over loopback sockets (guard.py).

Small limits keep the tests short: the server must close what does not send
a request in time, and never cut what it is answering.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from h2ochat.server import RunningServer, ServerConfig, start_server
from h2ochat.server.edge.guard import fit_open_files
from reliability.process import write_config
from reliability.slowsockets import dribble_body, dribble_head, idle, open_socket, read_until_closed, status_of
from tests.helpers import events, fixed_config

TEXT = "one two three four five six seven eight nine ten eleven twelve"


def limited(**settings: Any) -> ServerConfig:
    """The fixed backend behind small limits (seconds); ``settings`` override them."""
    config = fixed_config(text=TEXT, delay=settings.pop("delay", 0.0))
    # keepalive_timeout: aiohttp also closes a connection that sends nothing within it; kept
    # long here so that the tests see the head clock alone.
    limits = {"header_timeout": 0.5, "body_timeout": 0.5, "keepalive_timeout": 10, **settings}
    return msgspec.structs.replace(config, **limits)


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with start_server(limited()) as running:
        yield running


async def get(url: str, path: str = "/api/models") -> int:
    """A normal request on a connection of its own."""
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http, http.get(url + path) as response:
        await response.read()
        return response.status


async def test_an_idle_socket_is_closed_after_the_header_timeout(server: RunningServer) -> None:
    outcome = await idle(server.url, limit=6)
    assert outcome.closed and outcome.answer == b""
    assert 0.4 <= outcome.seconds < 4, outcome


async def test_a_head_sent_a_line_at_a_time_is_closed_counting_from_the_connection(server: RunningServer) -> None:
    # A line every 0.1 s: the client is never silent for long, yet the head never ends.
    outcome = await dribble_head(server.url, limit=6, every=0.1)
    assert outcome.closed and outcome.status is None
    assert 0.4 <= outcome.seconds < 4, outcome


async def test_blank_lines_are_no_request_head(server: RunningServer) -> None:
    reader, writer, _ = await open_socket(server.url)
    started = time.monotonic()
    for _ in range(60):  # 6 s of "\r\n\r\n", unless the server closes first
        writer.write(b"\r\n\r\n")
        answer, closed = await read_until_closed(reader, 0.1)
        if closed:
            break
    writer.close()
    assert closed and answer == b""
    assert 0.4 <= time.monotonic() - started < 4


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/generate", "message")],
)
async def test_a_stalled_body_gets_a_408_in_its_apis_shape_and_the_close(
    server: RunningServer, path: str, shape: str
) -> None:
    outcome = await dribble_body(server.url, limit=6, every=0.2, path=path)
    assert outcome.closed and outcome.status == 408, outcome
    assert 0.4 <= outcome.seconds < 4, outcome
    head, _, body = outcome.answer.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower()
    payload = json.loads(body)
    message = payload["error"]["message"] if shape == "openai" else payload["message"]
    assert "did not arrive within 0.5 s" in message


async def test_a_body_sent_slowly_but_in_time_is_answered() -> None:
    # The head's clock stops at the head: a body taking longer than header_timeout is fine.
    async with start_server(limited(header_timeout=0.3, body_timeout=3)) as server:
        reader, writer, host = await open_socket(server.url)
        body = json.dumps({"inputs": "hello"}).encode()
        head = f"POST /generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
        for start in range(0, len(body), 4):
            writer.write(body[start : start + 4])
            await asyncio.sleep(0.1)
        answer, _ = await read_until_closed(reader, 3)
        writer.close()
    assert status_of(answer) == 200, answer[:200]
    assert TEXT.encode() in answer


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    async with start_server(limited(header_timeout=10, keepalive_timeout=0.5)) as server:
        reader, writer, host = await open_socket(server.url)
        writer.write(f"GET /api/models HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        started = time.monotonic()
        answer, closed = await read_until_closed(reader, 5)
        writer.close()
    assert status_of(answer) == 200 and closed
    assert 0.4 <= time.monotonic() - started < 4


async def test_a_later_request_head_has_its_clock_from_its_first_byte() -> None:
    async with start_server(limited(header_timeout=0.6, keepalive_timeout=10)) as server:
        reader, writer, host = await open_socket(server.url)
        writer.write(f"GET /api/models HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        first = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
        await asyncio.sleep(0.8)  # idle longer than header_timeout: the keep-alive limit governs here
        writer.write(b"GET /api/mod")
        started = time.monotonic()
        answer, closed = await read_until_closed(reader, 5)
        writer.close()
    assert closed and answer == b""
    assert 0.5 <= time.monotonic() - started < 4


async def test_a_stream_slower_than_every_limit_completes() -> None:
    # Twelve tokens 0.25 s apart: 3 s of answer, with keep-alives, against 0.5 s limits.
    config = msgspec.structs.replace(
        limited(delay=0.25, max_connections=2, keepalive_timeout=0.5), keepalive_interval=0.2
    )
    async with start_server(config) as server, aiohttp.ClientSession() as http:
        started = time.monotonic()
        async with http.post(server.url + "/generate_stream", json={"inputs": "hi"}) as response:
            raw = await response.read()
        assert time.monotonic() - started > 2.5
        # The connection went back to the pool after the answer; the next request uses it or a new one.
        assert await get(server.url) == 200
    assert response.status == 200
    assert events(raw)[-1]["generated_text"] == TEXT
    assert b":" in raw.split(b"data:")[1]  # keep-alive comments came between the tokens


async def test_many_slow_connections_over_the_cap_do_not_stop_normal_requests() -> None:
    async with start_server(limited(header_timeout=30, keepalive_timeout=30, max_connections=20)) as server:
        slow = [await open_socket(server.url) for _ in range(60)]
        statuses = [await get(server.url) for _ in range(10)]
        await asyncio.sleep(0.1)
        still_open = [not reader.at_eof() for reader, _, _ in slow]
        for _, writer, _ in slow:
            writer.close()
    assert statuses == [200] * 10
    # The oldest were evicted to make room; the server holds no more than its cap.
    assert sum(still_open) <= 20
    assert not any(still_open[:30])


async def test_a_full_server_of_answering_streams_refuses_a_new_connection_and_cuts_none() -> None:
    config = limited(delay=0.1, max_connections=2, header_timeout=5)
    async with start_server(config) as server, aiohttp.ClientSession() as http:

        async def stream() -> bytes:
            async with http.post(server.url + "/generate_stream", json={"inputs": "hi"}) as response:
                return await response.read()

        streams = [asyncio.create_task(stream()) for _ in range(2)]
        await asyncio.sleep(0.3)
        outcome = await idle(server.url, limit=2)
        answers = await asyncio.gather(*streams)
    assert outcome.closed and outcome.seconds < 2  # refused at once (not at header_timeout): nothing to evict
    assert [events(raw)[-1]["generated_text"] for raw in answers] == [TEXT, TEXT]


async def test_the_command_line_options_reach_the_guard(tmp_path: Path) -> None:
    config = write_config(tmp_path / "fixed.toml", tmp_path / "fixed.db", text=TEXT)
    command = [sys.executable, "-m", "h2ochat", "serve", "--config", str(config), "--port", "0"]
    command += ["--header-timeout", "2", "--keepalive-timeout", "20", "--max-connections", "3"]
    process = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    try:
        await asyncio.wait_for(process.stderr.readuntil(b"serving http://"), 60)
        url = "http://" + (await process.stderr.readuntil(b" ")).decode().strip()
        slow = [await open_socket(url) for _ in range(5)]
        closed = [(await read_until_closed(reader, 0.2))[1] for reader, _, _ in slow]
        for _, writer, _ in slow:
            writer.close()
        outcome = await idle(url, limit=8)
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 20)
    assert closed == [True, True, False, False, False]  # --max-connections 3: the two oldest made room
    assert outcome.closed and 1.9 <= outcome.seconds < 6  # --header-timeout 2


def test_a_low_soft_open_file_limit_is_raised_to_fit_max_connections() -> None:
    resource = pytest.importorskip("resource")  # not on Windows
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip(f"the hard open-file limit ({hard}) leaves no room to raise towards")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert fit_open_files(1000) == 1000
        raised, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert 1000 < raised < 2000  # what 1,000 connections and the server's own files need, not everything
