"""Clients that stop reading, beside normal requests (issue 19): the ``readers`` suite.

The server runs in a process of its own with its default limits but for ``write_timeout`` (5 s, so
that 32 stopped streams on 8 places pass within the run) and one model on the fixed backend with 8
places, as the embedded model has, echoing its input. Each connection's send buffer is 4 KiB (the
guard's test-scoped hook): over loopback the kernel would otherwise take in about a megabyte of
answer per socket, which no real network does for a client that reads nothing.

First normal requests alone (the comparison), then the same requests beside ``readers`` sockets that
ask for the page's largest file (129 KB) and read only its status line, each opened again
``reopen`` s after the server closes it, and ``streams`` answer streams, opened once, whose readers
stop after the status line. A client that reads nothing learns of the close from its kernel's
connection state (a reset); the server's log says how many it closed by which limit and how many
streams it ended for want of a reader.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reliability.process import ServerProcess, write_config
from reliability.report import Report
from reliability.slowclients import SlowResult, allow_files, latency, normal_clients, read_log, watch_lag
from reliability.slowsockets import Outcome, closed_by_server, stop_reading

__all__ = ["ReadersResult", "readers_suite", "run_readers"]

BIG_FILE = b"GET /static/vendor/highlight.js/highlight.min.js HTTP/1.1\r\nHost: {host}\r\n\r\n"
# 95 tokens of 1 KB echoed back: past what the buffers take in (64 KiB in asyncio's, a few in the kernel's).
LONG_INPUTS = " ".join(["x" * 1000] * 95)
SEND_BUFFER = 4096
PLACES = 8
_CUT = re.compile(r"stopped reading its stream")


@dataclass
class ReadersResult(SlowResult):
    streams: int = 0
    write_timeout: float = 0.0
    attack_started: float = 0.0  # time.monotonic() when the stopped readers began
    stream_outcomes: list[Outcome] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # when normal requests failed (monotonic)
    streams_cut: int = 0  # streams the server ended for want of a reader, from its log

    def closed(self, outcomes: list[Outcome]) -> int:
        return sum(1 for outcome in outcomes if outcome.closed)

    @property
    def last_failure(self) -> float | None:
        """Seconds from the start of the attack to the last normal request that failed."""
        return max(self.failed_at) - self.attack_started if self.failed_at else None

    def as_json(self) -> dict[str, Any]:
        details = super().as_json()
        del details["answered_408"], details["longest_open"]
        streams = self.stream_outcomes
        return {
            **details,
            "streams": self.streams,
            "write_timeout": self.write_timeout,
            "readers_closed": self.closed(self.outcomes),
            "readers_left_open": len(self.outcomes) - self.closed(self.outcomes),
            "streams_closed": self.closed(streams),
            "streams_left_open": len(streams) - self.closed(streams),
            "streams_cut_by_write_timeout": self.streams_cut,
            "longest_held": {kind: round(self.longest(kind), 2) for kind in ("reader", "stream")},
            "last_failure_s": None if self.last_failure is None else round(self.last_failure, 1),
        }

    def longest(self, kind: str) -> float:
        """The longest a stopped reader of ``kind`` held its connection: until the server closed it, or
        to the end of the run."""
        outcomes = self.stream_outcomes if kind == "stream" else self.outcomes
        return max((outcome.seconds for outcome in outcomes), default=0.0)


async def run_readers(
    workdir: Path,
    readers: int = 1000,
    streams: int = 32,
    seconds: float = 40.0,
    write_timeout: float = 5.0,
    max_connections: int = 1000,
    open_files: int | None = None,
    reopen: float = 1.0,
    workers: int = 4,
) -> ReadersResult:
    """Normal requests for ``seconds`` / 4 alone, then for ``seconds`` beside the stopped readers."""
    settings = {"write_timeout": write_timeout, "max_connections": max_connections}
    endpoint = {"echo": True, "max_concurrency": PLACES}
    config = write_config(workdir / "readers.toml", workdir / "readers.db", settings, **endpoint)
    log = workdir / "server.log"
    server = ServerProcess(config, log, open_files=open_files, log_level="INFO", send_buffer=SEND_BUFFER)
    result = ReadersResult(
        readers, open_files, 10.0, 30.0, cap=max_connections, streams=streams, write_timeout=write_timeout
    )
    allow_files(readers + streams + 256)  # this process holds the client ends
    server.start()
    try:
        await normal_clients(server.url, 0.5, workers, "Hello there.")  # warm-up, not counted
        result.alone, result.failed_alone = await normal_clients(server.url, seconds / 4, workers, "Hello there.")
        await _attack(server.url, result, seconds, reopen, workers)
    finally:
        server.stop()
    text = log.read_text(encoding="utf-8", errors="replace")
    read_log(text, result)
    result.streams_cut = len(_CUT.findall(text))
    return result


async def _attack(url: str, result: ReadersResult, seconds: float, reopen: float, workers: int) -> None:
    """The streams and the readers (spread over 1.5 s: a burst would overflow the listen backlog), then
    the normal requests."""
    ramp = 3.0
    end = time.monotonic() + ramp + seconds
    result.attack_started = time.monotonic()
    stagger = ramp / 2 / max(1, result.slow)
    attackers = [asyncio.create_task(_stream(url, end, result)) for _ in range(result.streams)]
    attackers += [asyncio.create_task(_reader(url, i * stagger, end, reopen, result)) for i in range(result.slow)]
    attackers.append(asyncio.create_task(watch_lag(result)))
    try:
        await asyncio.sleep(ramp)
        normal = await normal_clients(url, seconds, workers, "Hello there.", result.failed_at)
        result.attacked, result.failed_attacked = normal
    finally:
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)


async def _reader(url: str, delay: float, end: float, reopen: float, result: ReadersResult) -> None:
    """One socket asking for a large file and reading nothing of it; again once the server closes it."""
    await asyncio.sleep(delay)
    while end - time.monotonic() > 0:
        result.opened["reader"] += 1
        await _stop_reading(url, BIG_FILE, "reader", end, result, result.outcomes)
        await asyncio.sleep(reopen)


async def _stream(url: str, end: float, result: ReadersResult) -> None:
    """One answer stream whose reader stops after the status line."""
    result.opened["stream"] += 1
    body = json.dumps({"inputs": LONG_INPUTS, "parameters": {"max_new_tokens": 100}})
    head = "POST /generate_stream HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    request = f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode()
    await _stop_reading(url, request, "stream", end, result, result.stream_outcomes)


async def _stop_reading(
    url: str, request: bytes, kind: str, end: float, result: ReadersResult, outcomes: list[Outcome]
) -> None:
    """Send ``request``, read the status line, then nothing, until the server closes the connection or
    the run ends (cancelled then): its outcome goes to ``outcomes``, unless no answer began at all (a
    server that stopped accepting)."""
    started = time.monotonic()
    try:
        client = await asyncio.wait_for(stop_reading(url, request), max(0.0, end - started))
    except (OSError, asyncio.TimeoutError):
        result.opened[f"{kind}: no answer"] += 1
        return
    try:
        await _until_closed(client, end)
    finally:
        outcomes.append(Outcome(kind, closed_by_server(client), time.monotonic() - started))
        client.close()


async def _until_closed(client: socket.socket, end: float, every: float = 0.25) -> None:
    # Polled: a client that reads nothing sees the close only in its kernel's connection state.
    for _ in range(max(1, int((end - time.monotonic()) / every))):
        if closed_by_server(client):
            return
        await asyncio.sleep(every)


async def readers_suite(report: Report, readers: int, streams: int, seconds: float, workdir: Path) -> None:
    """:func:`run_readers` once, without a ulimit: the default cap of 1,000 connections is in effect."""
    name = "stopped readers"
    result = await run_readers(workdir / "readers", readers, streams, seconds)
    _figures(report, name, result)
    report.details[name] = result.as_json()


def _figures(report: Report, suite: str, result: ReadersResult) -> None:
    def add(name: str, value: object, ok: bool | None = None) -> None:
        report.add(suite, name, value, ok)

    add("stopped readers / streams / connection cap in effect", f"{result.slow} / {result.streams} / {result.cap}")
    add("opened in all (readers reopened when closed)", ", ".join(f"{k} {n}" for k, n in result.opened.items()))
    server = result.server
    closes = " / ".join(str(server.get(key, "?")) for key in ("header_timeout", "body_timeout", "evicted", "refused"))
    add("closed by the server: head limit / body limit / evicted / refused", closes, server.get("evicted", 0) > 0)
    readers, streams = result.outcomes, result.stream_outcomes
    add(
        "readers seen closed by their clients / left open at the end",
        f"{result.closed(readers)} / {len(readers) - result.closed(readers)}",
    )
    cut, closed = result.streams_cut, result.closed(streams)
    add(
        "streams ended by write_timeout (server's log) / seen closed / of",
        f"{cut} / {closed} / {result.streams}",
        cut == closed == result.streams,
    )
    held = result.longest("stream")
    # Eight places: the last of the streams waits for three waves before its own.
    bound = result.write_timeout * -(-result.streams // PLACES) + 5
    add("longest a stopped stream held its connection (waiting for a place included)", f"{held:.1f} s", held <= bound)
    answered, failed = len(result.attacked), sum(result.failed_attacked.values())
    share = 100 * failed / max(1, answered + failed)
    kinds = ", ".join(f"{kind} {count}" for kind, count in result.failed_attacked.items())
    add("normal requests answered / failed", f"{answered} / {failed} ({share:.1f}%){': ' + kinds if kinds else ''}")
    last = result.last_failure
    add("last normal request failed, after the attack began", "none failed" if last is None else f"{last:.1f} s")
    alone, attacked = latency(result.alone), latency(result.attacked)
    add(
        "normal latency p50 / p99: alone -> under attack",
        f"{alone.get('p50_ms')} / {alone.get('p99_ms')} -> {attacked.get('p50_ms')} / {attacked.get('p99_ms')} ms",
    )
    add("accept() failures for want of descriptors (EMFILE)", result.emfile, result.emfile == 0)
    add("the clients' event-loop lag, max (a busy machine shows here)", f"{result.client_lag * 1000:.0f} ms")
