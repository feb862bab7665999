"""Many concurrent streaming conversations against the server in its own process.

``streams`` workers, each with its own ``H2oSession`` (its own cookie and
connections), ask one question after another until ``seconds`` have passed.
Measured: answers, errors, time to first token (from the call to the first
token, the one round trip included), the server's resident memory every
second, and afterwards the database: every conversation must have been
deleted by its client.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h2ochat import H2oSession, Messages, Timeout
from reliability.process import MODEL, ServerProcess, db_rows, write_config

__all__ = ["LoadResult", "percentile", "run_load"]

WORDS = "The quick brown fox jumps over the lazy dog while the server keeps every stream alive and well."
MIB = 1024 * 1024


@dataclass
class LoadResult:
    streams: int
    seconds: float
    answers: int = 0
    tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    wrong_answers: int = 0
    first_token: list[float] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)
    warmup: float = 0.0
    leaked_conversations: int = -1
    messages_left: int = -1

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rss_after_warmup(self) -> tuple[int, int]:
        """(RSS when warm-up ended, largest RSS after it)."""
        after = [rss for at, rss in self.rss if at >= self.warmup] or [0]
        return after[0], max(after)

    @property
    def rss_growth_mib(self) -> float:
        warm, peak = self.rss_after_warmup
        return (peak - warm) / MIB

    @property
    def rss_slope_mib_per_min(self) -> float:
        """Least-squares slope of RSS after warm-up (a leak shows as a steady climb)."""
        points = [(at, rss / MIB) for at, rss in self.rss if at >= self.warmup]
        if len(points) < 3:
            return 0.0
        return statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope * 60

    def as_json(self) -> dict[str, Any]:
        warm, peak = self.rss_after_warmup
        return {
            "streams": self.streams,
            "seconds": self.seconds,
            "answers": self.answers,
            "answers_per_second": round(self.answers / self.seconds, 1),
            "tokens_per_second": round(self.tokens / self.seconds, 1),
            "errors": self.errors,
            "wrong_answers": self.wrong_answers,
            "first_token_p50": round(percentile(self.first_token, 50), 4),
            "first_token_p99": round(percentile(self.first_token, 99), 4),
            "first_token_max": round(max(self.first_token, default=0.0), 4),
            "rss_mib_after_warmup": round(warm / MIB, 1),
            "rss_mib_peak_after_warmup": round(peak / MIB, 1),
            "rss_growth_mib": round(self.rss_growth_mib, 1),
            "rss_slope_mib_per_min": round(self.rss_slope_mib_per_min, 2),
            "leaked_conversations": self.leaked_conversations,
            "messages_left": self.messages_left,
            "rss_samples": [(round(at, 1), round(rss / MIB, 1)) for at, rss in self.rss],
        }


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


async def run_load(
    workdir: Path, streams: int, seconds: float, delay: float = 0.05, warmup: float | None = None
) -> LoadResult:
    """Run the load against a fresh server process; ``delay`` is the time between tokens."""
    db = workdir / "load.db"
    # Every worker is a user of its own, all from this one address: no cap on new sessions here.
    config = write_config(workdir / "load.toml", db, server={"new_sessions_per_minute": 0}, text=WORDS, delay=delay)
    server = ServerProcess(config, workdir / "load-server.log")
    result = LoadResult(streams, seconds, warmup=seconds / 4 if warmup is None else warmup)
    server.start()
    try:
        started = time.monotonic()
        deadline = started + seconds
        sampler = asyncio.ensure_future(_sample_rss(server, started, result))
        await asyncio.gather(*(_worker(server.url, deadline, result) for _ in range(streams)))
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    finally:
        server.stop()
    result.leaked_conversations = db_rows(db, "SELECT count(*) FROM conversations")[0][0]
    result.messages_left = db_rows(db, "SELECT count(*) FROM messages")[0][0]
    return result


async def _worker(url: str, deadline: float, result: LoadResult) -> None:
    messages: Messages = [{"role": "user", "content": "Tell me about foxes."}]
    # Generous limits: under load a slow answer is a figure (time to first token), not an error.
    async with H2oSession(url, timeout=Timeout(connect=30, first_token=120, read=60), max_retries=0) as session:
        while time.monotonic() < deadline:
            called = time.monotonic()
            parts: list[str] = []
            try:
                async for token in session.stream(messages, MODEL):
                    if not parts:
                        result.first_token.append(time.monotonic() - called)
                    parts.append(token)
            except Exception as exc:  # every failure is counted by type, none may stop the run
                name = type(exc).__name__
                result.errors[name] = result.errors.get(name, 0) + 1
                await asyncio.sleep(0.1)
                continue
            result.answers += 1
            result.tokens += len(parts)
            result.wrong_answers += "".join(parts) != WORDS


async def _sample_rss(server: ServerProcess, started: float, result: LoadResult) -> None:
    while True:
        result.rss.append((time.monotonic() - started, server.rss()))
        await asyncio.sleep(1.0)
