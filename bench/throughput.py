"""Benchmark 2: tokens per second received over loopback from a server that never waits.

The replay server (``bench.replay``, its own process) answers with
pre-encoded events as fast as the socket takes them, so the client's own
work per token is what limits the rate.  Each client takes all four steps
every call; the time runs from the call to the last token (the delete
included, since a call is not over before it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from bench.common import Section, Target, start_child
from bench.corpus import make_stream
from bench.naive import naive_stream
from h2ochat import H2o, H2oSession

__all__ = ["MODEL", "PROMPT", "run"]

MODEL = "bench/replay"
PROMPT = "Tell me everything."
OURS = "H2o (one call)"
SESSION = "H2oSession (reused)"
NAIVE = "naive (original provider)"
TARGET = 3.0
Client = Callable[[int], AsyncIterator[str]]


def run(*, tokens: int = 20_000, repeats: int = 5, long_answer: int = 50_000) -> Section:
    section = Section(
        "throughput",
        f"2. Streaming throughput over loopback ({tokens:,} tokens per answer, replay server)",
        "x naive (higher is better)",
        parameters={"tokens": tokens, "repeats": repeats, "long_answer_tokens": long_answer},
    )
    with start_child("bench.replay") as server:
        samples, robustness = asyncio.run(_measure(server.url, tokens, repeats, long_answer))
    case = "tokens/s"
    for name, values in samples.items():
        section.add(case, name, values, "tokens/s")
    section.against(case, NAIVE, higher_is_better=True)
    ratio = section.row(case, OURS).ratio or 0.0
    section.targets.append(
        Target(
            f"H2o ≥ {TARGET:g}x the naive client's tokens/s",
            ratio >= TARGET,
            f"{ratio:.2f}x (reused session: {section.row(case, SESSION).ratio or 0.0:.2f}x)",
        )
    )
    section.notes.append(
        "Time runs from the call to its last token, the four steps included; each repeat runs every client once, "
        "in turn, and ratios are medians of the per-repeat ratios."
    )
    section.notes += robustness
    return section


async def _measure(url: str, tokens: int, repeats: int, long_answer: int) -> tuple[dict[str, list[float]], list[str]]:
    expected = make_stream(tokens).texts
    async with H2oSession(url) as session:
        clients: dict[str, Client] = {
            NAIVE: lambda n: naive_stream(url, MODEL, PROMPT, max_new_tokens=n),
            OURS: lambda n: H2o.create_async_generator(
                MODEL, [{"role": "user", "content": PROMPT}], url=url, max_new_tokens=n
            ),
            SESSION: lambda n: session.stream([{"role": "user", "content": PROMPT}], MODEL, max_new_tokens=n),
        }
        for name, client in clients.items():  # warm-up, and proof that every client gets the whole answer
            texts = [text async for text in client(tokens)]
            if texts != expected:
                raise AssertionError(f"{name} received {len(texts)} tokens, not the {len(expected)} sent")
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(repeats):
            for name, client in clients.items():
                samples[name].append(await _rate(client, tokens))
        robustness = []
        if long_answer:
            robustness = [await _long_answer(name, client, long_answer) for name, client in clients.items()]
    return samples, robustness


async def _rate(client: Client, tokens: int) -> float:
    start = time.perf_counter()
    count = 0
    async for _ in client(tokens):
        count += 1
    return count / (time.perf_counter() - start)


async def _long_answer(name: str, client: Client, tokens: int) -> str:
    """One answer whose final event (it carries the whole text) is a longer line than aiohttp reads.

    ``async for line in response.content`` fails on a line over twice the
    session's ``read_bufsize`` (256 KiB by default since aiohttp 3.13, 64 KiB before).
    """
    size = len(make_stream(tokens).events[-1])
    try:
        count = sum([1 async for _ in client(tokens)])
    except Exception as exc:  # the naive client's failure is the finding
        return f"long answer ({tokens:,} tokens, last event {size / 1024:.0f} KiB): {name} FAILED: {exc!r}"
    return f"long answer ({tokens:,} tokens, last event {size / 1024:.0f} KiB): {name} received all {count:,} tokens"
