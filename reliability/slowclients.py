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

__all__ = [
    "SlowResult",
    "allow_files",
    "latency",
    "normal_clients",
    "read_log",
    "run_slow_clients",
    "slow_figures",
    "slow_suite",
    "watch_lag",
]

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
        """The longest a slow connection of ``kind`` stayed open: until the server closed it or, one it
        never closed, until its client gave up at the end of the run (counting only the closed ones
        made a server that closed nothing look perfect)."""
        return max((o.seconds for o in self.outcomes if o.kind == kind), default=0.0)

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
            "normal_alone": latency(self.alone),
            "normal_attacked": latency(self.attacked),
            "failed_alone": dict(self.failed_alone),
            "failed_attacked": dict(self.failed_attacked),
            "server": self.server,
            "emfile": self.emfile,
            "client_lag_s": round(self.client_lag, 3),
            "longest_open": {kind: round(self.longest_open(kind), 2) for kind in ("idle", "head", "body")},
        }


def latency(samples: list[float]) -> dict[str, float]:
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
    allow_files(slow + 256)  # this process holds the client ends
    server.start()
    try:
        await normal_clients(server.url, 0.5, workers)  # warm-up, not counted
        result.alone, result.failed_alone = await normal_clients(server.url, seconds / 4, workers)
        await _attack(server.url, result, seconds, reopen, workers)
    finally:
        server.stop()
    read_log(log.read_text(encoding="utf-8", errors="replace"), result)
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
    attackers.append(asyncio.create_task(watch_lag(result)))
    try:
        await asyncio.sleep(ramp)
        result.attacked, result.failed_attacked = await normal_clients(url, seconds, workers)
        # Until the slow clients give up by themselves: each records what stayed open to the end.
        await asyncio.sleep(max(0.0, end - time.monotonic()) + 1.5)
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


async def watch_lag(result: SlowResult, every: float = 0.1) -> None:
    while True:
        started = time.monotonic()
        await asyncio.sleep(every)
        result.client_lag = max(result.client_lag, time.monotonic() - started - every)


async def normal_clients(
    url: str, seconds: float, workers: int, inputs: str = "hi", failed_at: list[float] | None = None
) -> tuple[list[float], Counter[str]]:
    """:func:`_normal_traffic` on an event loop of its own, in a thread: the normal clients do not
    wait behind the thousand slow ones' turns of this loop, as they would not on their own machines."""
    return await asyncio.to_thread(asyncio.run, _normal_traffic(url, seconds, workers, inputs, failed_at))


async def _normal_traffic(
    url: str, seconds: float, workers: int, inputs: str, failed_at: list[float] | None, pause: float = 0.05
) -> tuple[list[float], Counter[str]]:
    """``workers`` clients, each a new connection per request: a model list, then a whole TGI answer, in turn.

    The answer must be "Hello there." (the model's fixed text, or ``inputs`` echoed); ``failed_at``
    collects the time (``time.monotonic``) of each failure.
    """
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    end = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=10)

    def fail(kind: str) -> None:
        failures[kind] += 1
        if failed_at is not None:
            failed_at.append(time.monotonic())

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
                    async with http.post(url + "/generate", json={"inputs": inputs}) as response:
                        body = await response.json()
                        if body.get("generated_text") != "Hello there.":
                            fail("wrong answer" if response.status == 200 else f"HTTP {response.status}")
                            continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                fail(type(exc).__name__)
                continue
            if response.status != 200:
                fail(f"HTTP {response.status}")
                continue
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(pause)  # a steady client, not a flood: the attack is the load

    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(workers)))
    return latencies, failures


def allow_files(count: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        wanted = count if hard == resource.RLIM_INFINITY else min(count, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def read_log(text: str, result: SlowResult) -> None:
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
        slow_figures(report, name, result)
        report.details[name] = result.as_json()


def slow_figures(report: Report, suite: str, result: SlowResult) -> None:
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
    never = result.left_open("idle", result.header_timeout + 2) + result.left_open("head", result.header_timeout + 2)
    never += result.left_open("body", result.body_timeout + 2)
    add("slow connections never closed, open past their limit (and 2 s)", never, never == 0)
    held = max(result.longest_open("idle"), result.longest_open("head"))
    add("longest a slow head held its connection", f"{held:.1f} s", held <= result.header_timeout + 2)
    body = result.longest_open("body")
    add("longest a slow body held its connection", f"{body:.1f} s", body <= result.body_timeout + 2)
    answered, failed = len(result.attacked), sum(result.failed_attacked.values())
    share = 100 * failed / max(1, answered + failed)
    add("normal requests answered / failed", f"{answered} / {failed} ({share:.1f}%)", failed == 0 and answered > 0)
    alone, attacked = latency(result.alone), latency(result.attacked)
    add(
        "normal latency p50 / p99: alone -> under attack",
        f"{alone.get('p50_ms')} / {alone.get('p99_ms')} -> {attacked.get('p50_ms')} / {attacked.get('p99_ms')} ms",
    )
    add("accept() failures for want of descriptors (EMFILE)", result.emfile, result.emfile == 0)
    add("the slow clients' event-loop lag, max (a busy machine shows here)", f"{result.client_lag * 1000:.0f} ms")
