"""Answers through a network that drops them (issue 22): the ``reattach`` suite.

``streams`` answers, alternately in chat-ui 2023's protocol and today's, each through a
:class:`~reliability.cutter.CuttingProxy` that resets its connection once at a random byte of the
answer's body (tokens, the end, or before the first); the client (:class:`~h2ochat.H2oSession`)
reattaches by itself. The answer is a numbered list of words, one per token, so that every word
missing from what the client yielded, or yielded twice, is an event lost or repeated. The server runs
in this process on the fixed backend, each answer stored and logged as a run (the defaults).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field

from msgspec.structs import replace

from h2ochat import H2oChatError, H2oSession
from h2ochat.server import start_server
from h2ochat.server.config import FixedEndpoint, ModelConfig, ServerConfig
from reliability.cutter import CuttingProxy
from reliability.report import Report

__all__ = ["ReattachResult", "reattach_suite", "run_reattach"]

MODEL = "reliability/fixed"
WORDS = [f"t{index}" for index in range(120)]
TEXT = "".join(f"{word} " for word in WORDS)
BODY_BYTES = 12_000  # about the longest answer body (2023's events); cuts fall anywhere in it or past it


@dataclass
class ReattachResult:
    streams: int = 0
    cut: int = 0  # connections the network dropped
    whole: int = 0  # answers that came whole
    missing: int = 0  # words (events) never yielded
    repeated: int = 0  # words (events) yielded more than once
    failed: list[str] = field(default_factory=list)  # calls that raised, with why
    seconds: float = 0.0


async def run_reattach(streams: int, seed: int) -> ReattachResult:
    chooser, result = random.Random(seed), ReattachResult()
    endpoint = FixedEndpoint(text=TEXT, delay=0.002)
    config = replace(
        ServerConfig(port=0, db=":memory:", models=[ModelConfig(name=MODEL, endpoints=[endpoint])]),
        welcome_gate=False,
    )
    started = time.monotonic()
    async with start_server(config) as server:
        port = int(server.url.rsplit(":", 1)[1])
        async with CuttingProxy(port, lambda: chooser.randrange(BODY_BYTES)) as proxy:
            url = await proxy.start()
            for index in range(streams):
                proxy.cuts = 1
                protocol = "2023" if index % 2 == 0 else "current"
                await _one(url, protocol, result)
            result.cut = proxy.made
    result.seconds = time.monotonic() - started
    return result


async def _one(url: str, protocol: str, result: ReattachResult) -> None:
    result.streams += 1
    try:
        async with H2oSession(url, protocol=protocol, prefetch=False) as session:
            pieces = [piece async for piece in session.stream([{"role": "user", "content": "Hi"}], MODEL)]
    except H2oChatError as exc:
        result.failed.append(f"{protocol}: {type(exc).__name__}: {exc}")
        return
    got = Counter("".join(pieces).split())
    result.missing += sum(1 for word in WORDS if got[word] == 0)
    result.repeated += sum(count - 1 for count in got.values() if count > 1)
    result.whole += "".join(pieces) == TEXT


async def reattach_suite(report: Report, streams: int, seed: int) -> None:
    result = await run_reattach(streams, seed)
    add = report.add
    add("reattach", "answers, half in each protocol generation", result.streams)
    add("reattach", "connections dropped mid-answer", result.cut, result.cut > 0)
    add("reattach", "answers that came whole", f"{result.whole}/{result.streams}", result.whole == result.streams)
    add("reattach", "events missing", result.missing, result.missing == 0)
    add("reattach", "events repeated", result.repeated, result.repeated == 0)
    add("reattach", "calls that failed", len(result.failed), not result.failed)
    add("reattach", "time", f"{result.seconds:.0f} s")
    report.details["reattach_failures"] = result.failed[:20]
