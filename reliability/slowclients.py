"""Slowloris against the server: many slow connections, and normal requests still answered.

The server runs in a process of its own under ``ulimit -n`` (256 in the long
run, as the issue's report had it), with its default limits unless told. First
normal requests alone (the comparison), then the same requests while ``slow``
connections are held open: half idle, half dribbling a request head, one in a
hundred dribbling a body. A slow connection that the server closes is opened
again after ``reopen`` seconds, as a slowloris tool does, until the run ends.
The server's own log says how many it closed by which limit.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from reliability.process import ServerProcess, write_config
from reliability.report import Report
from reliability.slowsockets import Outcome, dribble_body, dribble_head, idle

__all__ = ["SlowResult", "run_slow_clients", "slow_suite"]

_SUMMARY = re.compile(r"connections: ((?:\w+=\d+ ?)+)")
_CAP = re.compile(r"leaves room for (\d+) connections")
_EMFILE = ("out of system resource", "Too many open files")


@dataclass
class SlowResult:
    slow: int
    open_files: int | None
    header_timeout: float
    body_timeout: float
    cap: int  # the connection cap in effect (smaller than max_connections under a low ulimit)
    opened: Counter[str] = field(default_factory=Counter)  # slow connections by kind, reopenings included
    outcomes: list[Outcome] = field(default_factory=list)
    alone: list[float] = field(default_factory=list)  # normal request latencies, s
    attacked: list[float] = field(default_factory=list)
    failed_alone: Counter[str] = field(default_factory=Counter)
    failed_attacked: Counter[str] = field(default_factory=Counter)
    server: dict[str, int] = field(default_factory=dict)  # the guard's counts, from its log
    emfile: int = 0  # accept() failures for want of descriptors, from the server's log
    client_lag: float = 0.0  # the longest the slow clients' event loop was late (a busy machine shows here)

    @property
    def answered_408(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == 408)

    def longest_open(self, kind: str) -> float:
        """The longest a slow connection of ``kind`` stayed open before the server closed it."""
        return max((o.seconds for o in self.outcomes if o.kind == kind and o.closed), default=0.0)

    def left_open(self, kind: str, limit: float) -> int:
        """Slow connections of ``kind`` still open ``limit`` seconds after they connected."""
        return sum(1 for o in self.outcomes if o.kind == kind and not o.closed and o.seconds >= limit)

    def as_json(self) -> dict[str, Any]:
        return {
            "slow": self.slow,
            "open_files": self.open_files,
            "cap": self.cap,
            "opened": dict(self.opened),
            "answered_408": self.answered_408,
            "normal_alone": _latency(self.alone),
            "normal_attacked": _latency(self.attacked),
            "failed_alone": dict(self.failed_alone),
            "failed_attacked": dict(self.failed_attacked),
            "server": self.server,
            "emfile": self.emfile,
            "client_lag_s": round(self.client_lag, 3),
            "longest_open": {kind: round(self.longest_open(kind), 2) for kind in ("idle", "head", "body")},
        }


def _latency(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "count": len(samples),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
    }


async def run_slow_clients(
    workdir: Path,
    slow: int = 1000,
    seconds: float = 40.0,
    open_files: int | None = 256,
    header_timeout: float = 10.0,
    body_timeout: float = 30.0,
    reopen: float = 1.0,
    workers: int = 4,
) -> SlowResult:
    """Normal requests for ``seconds`` / 4 alone, then for ``seconds`` beside ``slow`` slow connections."""
    settings = {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_connections": 1000}
    config = write_config(workdir / "slow.toml", workdir / "slow.db", settings, text="Hello there.")
    log = workdir / "server.log"
    server = ServerProcess(config, log, open_files=open_files, log_level="INFO")
    result = SlowResult(slow, open_files, header_timeout, body_timeout, cap=1000)
    _allow_files(slow + 256)  # this process holds the client ends
    server.start()
    try:
        await _normal_clients(server.url, 0.5, workers)  # warm-up, not counted
        result.alone, result.failed_alone = await _normal_clients(server.url, seconds / 4, workers)
        await _attack(server.url, result, seconds, reopen, workers)
    finally:
        server.stop()
    _read_log(log.read_text(encoding="utf-8", errors="replace"), result)
    return result


async def _attack(url: str, result: SlowResult, seconds: float, reopen: float, workers: int) -> None:
    """The slow connections, then (after a ramp of half the header limit, 3 s at most) the normal requests."""
    ramp = min(3.0, result.header_timeout / 2)
    end = time.monotonic() + ramp + seconds
    bodies = max(1, result.slow // 100)
    kinds = ["body" if i < bodies else ("idle" if i % 2 else "head") for i in range(result.slow)]
    # Spread over the ramp: a burst beyond the listen backlog would leave most of them waiting in the
    # kernel for a SYN retry, never reaching the server.
    stagger = ramp / 2 / len(kinds)
    attackers = [
        asyncio.create_task(_slowloris(url, kind, i * stagger, end, reopen, result)) for i, kind in enumerate(kinds)
    ]
    attackers.append(asyncio.create_task(_watch_lag(result)))
    try:
        await asyncio.sleep(ramp)
        result.attacked, result.failed_attacked = await _normal_clients(url, seconds, workers)
    finally:
        for task in attackers:
            task.cancel()
        await asyncio.gather(*attackers, return_exceptions=True)


async def _slowloris(url: str, kind: str, delay: float, end: float, reopen: float, result: SlowResult) -> None:
    """One slow client: connect, be slow until the server closes, wait ``reopen`` s, again, until ``end``."""
    await asyncio.sleep(delay)
    while (left := end - time.monotonic()) > 0:
        result.opened[kind] += 1
        try:
            if kind == "idle":
                outcome = await idle(url, left)
            else:  # a line or a byte a second
                outcome = await (dribble_head if kind == "head" else dribble_body)(url, left, every=1.0)
            result.outcomes.append(outcome)
        except OSError:
            result.opened["connect failed"] += 1
        await asyncio.sleep(reopen)


async def _watch_lag(result: SlowResult, every: float = 0.1) -> None:
    while True:
        started = time.monotonic()
        await asyncio.sleep(every)
        result.client_lag = max(result.client_lag, time.monotonic() - started - every)


async def _normal_clients(url: str, seconds: float, workers: int) -> tuple[list[float], Counter[str]]:
    """:func:`_normal_traffic` on an event loop of its own, in a thread: the normal clients do not
    wait behind the thousand slow ones' turns of this loop, as they would not on their own machines."""
    return await asyncio.to_thread(asyncio.run, _normal_traffic(url, seconds, workers))


async def _normal_traffic(
    url: str, seconds: float, workers: int, pause: float = 0.05
) -> tuple[list[float], Counter[str]]:
    """``workers`` clients, each a new connection per request: a model list, then a whole TGI answer, in turn."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    end = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=10)

    async def worker(http: aiohttp.ClientSession) -> None:
        turn = 0
        while time.monotonic() < end:
            turn += 1
            started = time.monotonic()
            try:
                if turn % 2:
                    async with http.get(url + "/api/models") as response:
                        await response.read()
                else:
                    async with http.post(url + "/generate", json={"inputs": "hi"}) as response:
                        body = await response.json()
                        if body.get("generated_text") != "Hello there.":
                            failures["wrong answer"] += 1
                            continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failures[type(exc).__name__] += 1
                continue
            if response.status != 200:
                failures[f"HTTP {response.status}"] += 1
                continue
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(pause)  # a steady client, not a flood: the attack is the load

    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(workers)))
    return latencies, failures


def _allow_files(count: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _read_log(text: str, result: SlowResult) -> None:
    summary = _SUMMARY.search(text)
    if summary:
        result.server = {key: int(value) for key, value in (pair.split("=") for pair in summary.group(1).split())}
    cap = _CAP.search(text)
    if cap:
        result.cap = int(cap.group(1))
    result.emfile = sum(text.count(marker) for marker in _EMFILE)


async def slow_suite(report: Report, slow: int, seconds: float, open_files: int | None, workdir: Path) -> None:
    """:func:`run_slow_clients` with the server's default limits, under ``ulimit -n open_files`` and without."""
    for limit in dict.fromkeys([open_files, None]):
        name = "slow clients" + (f", ulimit -n {limit}" if limit else ", no ulimit")
        result = await run_slow_clients(workdir / f"slow-{limit}", slow, seconds, limit)
        _figures(report, name, result)
        report.details[name] = result.as_json()


def _figures(report: Report, suite: str, result: SlowResult) -> None:
    def add(name: str, value: object, ok: bool | None = None) -> None:
        report.add(suite, name, value, ok)

    add("slow connections held open / connection cap in effect", f"{result.slow} / {result.cap}")
    add(
        "slow connections opened in all (reopened when closed)", ", ".join(f"{k} {n}" for k, n in result.opened.items())
    )
    server = result.server
    add(
        "closed by the server: head limit / body limit / evicted / refused",
        " / ".join(str(server.get(key, "?")) for key in ("header_timeout", "body_timeout", "evicted", "refused")),
        server.get("header_timeout", 0) + server.get("evicted", 0) > 0,
    )
    add("stalled bodies answered 408", result.answered_408, result.answered_408 > 0)
    held = max(result.longest_open("idle"), result.longest_open("head"))
    add("longest a slow head held its connection", f"{held:.1f} s", held <= result.header_timeout + 2)
    body = result.longest_open("body")
    add("longest a slow body held its connection", f"{body:.1f} s", body <= result.body_timeout + 2)
    answered, failed = len(result.attacked), sum(result.failed_attacked.values())
    share = 100 * failed / max(1, answered + failed)
    add("normal requests answered / failed", f"{answered} / {failed} ({share:.1f}%)", failed == 0 and answered > 0)
    alone, attacked = _latency(result.alone), _latency(result.attacked)
    add(
        "normal latency p50 / p99: alone -> under attack",
        f"{alone.get('p50_ms')} / {alone.get('p99_ms')} -> {attacked.get('p50_ms')} / {attacked.get('p99_ms')} ms",
    )
    add("accept() failures for want of descriptors (EMFILE)", result.emfile, result.emfile == 0)
    add("the slow clients' event-loop lag, max (a busy machine shows here)", f"{result.client_lag * 1000:.0f} ms")
