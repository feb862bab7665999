"""Benchmark 3: the time from the call to the first token, counted in network round trips.

The replay server sits behind ``bench.proxy``, which delays every byte by
``delay`` seconds each way: one round trip (RTT) is 2 x delay.  Every client
is timed both directly on loopback and through the proxy; the difference
divided by one RTT is the number of round trips the client spends before
its first token, beyond the server's own time.

Where the round trips go (docs/protocol.md section 1):

- a new connection: 1 (the TCP handshake; TLS would add 1 to 2, not modelled);
- POST /settings: 1; POST /conversation: 1; POST /conversation/<id> until
  its first event: 1.

A one-shot call pays all four: 4 RTT.  A new session's first call pays one
more, ``GET /api/models`` for the model's recommended parameters (once per
session).  A reused ``H2oSession`` has posted its settings and read the
models already, keeps its connections open and created this call's
conversation while the previous answer streamed, so only the message is
left: 1 RTT.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from bench.common import Section, Target, start_child
from bench.naive import naive_stream
from h2ochat import H2o, H2oSession

__all__ = ["run"]

MODEL = "bench/replay"
MESSAGES = [{"role": "user", "content": "Hello?"}]
TOKENS = 16
NAIVE = "naive (original provider)"
ONE_SHOT = "H2o (one call)"
FIRST = "H2oSession (first call)"
REUSED = "H2oSession (reused)"
TARGET_RTT = 1.2
Client = Callable[[], AsyncIterator[str]]


def run(*, delay: float = 0.02, repeats: int = 10, pause: float = 0.15) -> Section:
    section = Section(
        "latency",
        f"3. Time to first token, and round trips (proxy adds {delay * 1000:g} ms each way: 1 RTT = "
        f"{2 * delay * 1000:g} ms)",
        "naive / this (higher is better)",
        parameters={"delay_s": delay, "repeats": repeats, "pause_between_calls_s": pause, "tokens": TOKENS},
    )
    with (
        start_child("bench.replay") as server,
        start_child("bench.proxy", "--target", server.url, "--delay", str(delay)) as proxy,
    ):
        direct = asyncio.run(_measure(server.url, repeats, pause))
        delayed = asyncio.run(_measure(proxy.url, repeats, pause))
    rtt = 2 * delay
    for case, samples in (("loopback", direct), ("through the proxy", delayed)):
        for name, values in samples.items():
            section.add(case, name, [value * 1000 for value in values], "ms")
        section.against(case, NAIVE, higher_is_better=False)
    case = "round trips before the first token"
    for name in direct:
        base = section.row("loopback", name).stats.median / 1000
        section.add(case, name, [(value - base) / rtt for value in delayed[name]], "RTT")
    section.against(case, NAIVE, higher_is_better=False)
    reused = section.row(case, REUSED).stats.median
    section.targets.append(
        Target(
            f"reused H2oSession: first token within {TARGET_RTT} RTT beyond the server's own time",
            reused <= TARGET_RTT,
            f"{reused:.2f} RTT (one-shot H2o: {section.row(case, ONE_SHOT).stats.median:.2f}, "
            f"naive: {section.row(case, NAIVE).stats.median:.2f})",
        )
    )
    section.notes += [
        "RTT = (time through the proxy - median loopback time) / (2 x delay); spread from the proxied samples.",
        "One RTT each for: a new connection (TCP handshake), POST /settings, POST /conversation, and the message "
        "until its first event. One-shot calls pay 4 (a new session's first call 5: it reads the models list "
        "once, for the recommended parameters); a reused session has its settings, connections and the next "
        "conversation (prefetched during the previous answer) ready, so it pays only the message: 1.",
        f"Calls are {pause * 1000:g} ms apart (a user's think time), so a session's background work "
        "(the previous delete, the prefetch) is done before the next call.",
    ]
    return section


async def _measure(url: str, repeats: int, pause: float) -> dict[str, list[float]]:
    async with H2oSession(url) as session:
        clients: dict[str, Client] = {
            NAIVE: lambda: naive_stream(url, MODEL, MESSAGES[0]["content"], max_new_tokens=TOKENS),
            ONE_SHOT: lambda: H2o.create_async_generator(MODEL, MESSAGES, url=url, max_new_tokens=TOKENS),
            FIRST: lambda: _fresh_session(url),
            REUSED: lambda: session.stream(MESSAGES, MODEL, max_new_tokens=TOKENS),
        }
        for client in clients.values():  # warm-up: imports, the session's settings and first prefetch
            await _first_token(client)
            await asyncio.sleep(pause)
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(repeats):
            for name, client in clients.items():
                samples[name].append(await _first_token(client))
                await asyncio.sleep(pause)
    return samples


async def _fresh_session(url: str) -> AsyncIterator[str]:
    async with H2oSession(url) as session:
        async for token in session.stream(MESSAGES, MODEL, max_new_tokens=TOKENS):
            yield token


async def _first_token(client: Client) -> float:
    """Seconds from the call to its first token; the rest of the answer is then read to the end."""
    start = time.perf_counter()
    tokens = client()
    await anext(tokens)
    elapsed = time.perf_counter() - start
    async for _ in tokens:
        pass
    return elapsed
