"""Benchmark 6: replicas on PostgreSQL against one server on SQLite, through the whole chat protocol.

Every conversation is the protocol from end to end, each request sent to the
next replica as a load balancer would: the settings step (a new session),
create, a message answered by the fixed backend (every word a token), delete.
The servers are real ``h2ochat serve`` processes (tests/replicas.py); the
database is a throwaway PostgreSQL cluster (tests/pgcluster.py) with fsync off,
like SQLite's ``synchronous = NORMAL`` a trade of durability for speed that a
benchmark of the server, not the disk, wants.

Figures: conversations per second on SQLite (one process), PostgreSQL with one
replica and with two, as ratios to SQLite measured in the same run; the
statements each conversation sends to the database, counted by the store of a
server run in this process, one conversation at a time; then a thousand streams
open at once over two replicas, which must all complete.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from tests.pgcluster import Cluster, binaries
from tests.replicas import FIXED_MODEL, replicas, write_config

from bench.common import Section, Target, raise_fd_limit
from h2ochat.server.app import start_server
from h2ochat.server.config import load_config
from h2ochat.server.edge.http import STORE

__all__ = ["run"]

ANSWER = " ".join(f"word{n}" for n in range(32))
SLOW = 0.03  # seconds between tokens in the thousand-streams case: about 1 s per answer, all open together
COUNTED = 20  # conversations whose statements are counted, one at a time
STEPS = ("POST /settings", "POST /conversation", "POST /conversation/<id>", "DELETE /conversation/<id>")
SETTLE = 0.05  # seconds after a response: an answer's final save is sent after its last byte


def run(
    *, conversations: int = 400, concurrency: int = 32, streams: int = 1000, repeats: int = 3, counted: int = COUNTED
) -> Section:
    section = Section(
        "replicas",
        "6. Replicas: conversations per second through the whole protocol, SQLite and PostgreSQL",
        "x SQLite",
        parameters={
            "conversations": conversations,
            "concurrency": concurrency,
            "streams": streams,
            "repeats": repeats,
            "counted": counted,
        },
    )
    raise_fd_limit(streams * 3 + 1024)  # the replicas inherit it
    with tempfile.TemporaryDirectory(prefix="h2ochat-bench-") as scratch, _cluster() as cluster:
        work = Path(scratch)
        setups = [("SQLite, 1 server", str(work / "bench.db"), 1)]
        if cluster is not None:
            setups += [("PostgreSQL, 1 replica", "pg", 1), ("PostgreSQL, 2 replicas", "pg", 2)]
        rates: dict[str, list[float]] = {name: [] for name, _, _ in setups}
        for repeat in range(repeats):
            for name, db, count in setups:  # in turn, every repeat: load from elsewhere hits all alike
                url = cluster.create_database() if cluster is not None and db == "pg" else db
                config = write_config(work / f"r{repeat}-{count}-{len(rates[name])}.toml", url, **_settings())
                with replicas(count, config) as running:
                    rates[name].append(
                        asyncio.run(_conversations([r.url for r in running], conversations, concurrency))
                    )
        case = f"{conversations} conversations, {concurrency} at a time"
        for name, samples in rates.items():
            section.add(case, name, samples, "conv/s")
        section.against(case, "SQLite, 1 server", higher_is_better=True)
        for name, db, _ in setups[:2]:
            url = cluster.create_database() if cluster is not None and db == "pg" else str(work / "counted.db")
            config = write_config(work / f"counted-{db}.toml", url, **_settings())
            _add_statements(section, name, asyncio.run(_count_statements(config, counted)))
        if cluster is None:
            section.notes.append("PostgreSQL is not installed here (apt-get install -y postgresql): SQLite only.")
            return section
        config = write_config(work / "streams.toml", cluster.create_database(), **_settings(delay=SLOW))
        with replicas(2, config) as running:
            outcome = asyncio.run(_streams([r.url for r in running], streams))
    section.add(f"{streams} streams at once, 2 replicas", "completed", [outcome["completed"]], "streams")
    section.add(f"{streams} streams at once, 2 replicas", "wall time", [outcome["wall"]], "s")
    section.targets.append(
        Target(
            f"{streams:,} concurrent streams over two replicas all complete",
            outcome["completed"] == streams,
            f"{outcome['completed']} of {streams}" + (f"; {outcome['errors'][:3]}" if outcome["errors"] else ""),
        )
    )
    section.notes.append(
        "Each replica is a process of its own with a pool of 20 connections; on a 2-core machine the "
        "replicas, PostgreSQL and this client share the same cores, so a second replica adds no CPU here: "
        "the figure shows what the shared database costs, not how far more machines would go."
    )
    return section


def _settings(delay: float = 0.0) -> dict[str, Any]:
    return {
        "text": ANSWER,
        "delay": delay,
        "new_sessions_per_minute": 0,  # every conversation is a new session, all from this address
        "db_pool_size": 20,
        "keepalive_interval": 60.0,
    }


@contextmanager
def _cluster() -> Iterator[Cluster | None]:
    if binaries() is None:
        yield None
        return
    cluster = Cluster.create(max_connections=200)
    try:
        yield cluster
    finally:
        cluster.destroy()


async def _count_statements(config: Path, count: int) -> list[dict[str, int]]:
    """The statements of each step of ``count`` conversations, one at a time, as the store of a
    server in this process counts them (the replicas are processes of their own)."""
    counts: list[dict[str, int]] = []
    async with (
        start_server(load_config(config)) as server,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        for index in range(count):
            steps = _Steps(server.app[STORE])
            await _Protocol(http, [server.url], steps).conversation(index)
            counts.append(steps.counts)
    return counts


class _Steps:
    """The statements of each step of one conversation, read from the store after each response."""

    def __init__(self, store: Any) -> None:
        self.store, self.before, self.counts = store, store.statements, {}

    async def __call__(self, name: str) -> None:
        await asyncio.sleep(SETTLE)
        total = self.store.statements
        self.counts[name], self.before = total - self.before, total


def _add_statements(section: Section, name: str, counts: list[dict[str, int]]) -> None:
    """Medians: the store's upkeep, every few seconds, adds its statements to one step now and then."""
    section.add(
        "database statements per conversation, one at a time", name, [sum(c.values()) for c in counts], "statements"
    )
    for step in STEPS:
        section.add(f"database statements per {step}", name, [c[step] for c in counts], "statements")
    per_step = ", ".join(f"{step} {statistics.median(c[step] for c in counts):g}" for step in STEPS)
    section.notes.append(f"{name}: database statements per request (median of {len(counts)}): {per_step}.")


class _Protocol:
    """One client session per conversation (its own cookie), each request to the next replica; ``step``,
    when given, is awaited after each response, with the request's name."""

    def __init__(self, http: aiohttp.ClientSession, urls: list[str], step: Callable[[str], Any] | None = None) -> None:
        self.http, self.urls, self.turn, self.cookie, self.step = http, urls, 0, "", step

    async def _done(self, name: str) -> None:
        if self.step is not None:
            await self.step(name)

    def _next(self) -> tuple[str, dict[str, str]]:
        """The next replica, and the headers a page of the service would send it: a same-origin
        Referer (a body-less write, the delete, needs one) and the session's cookie."""
        self.turn += 1
        url = self.urls[self.turn % len(self.urls)]
        return url, {"Referer": url + "/", **({"Cookie": self.cookie} if self.cookie else {})}

    async def conversation(self, start: int) -> str:
        self.turn, self.cookie = start, ""
        url, headers = self._next()
        settings = {"ethicsModalAccepted": "true", "activeModel": FIXED_MODEL}
        async with self.http.post(f"{url}/settings", data=settings, headers=headers) as response:
            response.raise_for_status()
            self.cookie = response.headers["Set-Cookie"].split(";")[0]
        await self._done(STEPS[0])
        url, headers = self._next()
        async with self.http.post(f"{url}/conversation", json={"model": FIXED_MODEL}, headers=headers) as r:
            r.raise_for_status()
            conversation = (await r.json())["conversationId"]
        await self._done(STEPS[1])
        body = {"inputs": "Hi", "parameters": {}, "options": {"id": _uuid(), "response_id": _uuid(), "is_retry": False}}
        url, headers = self._next()
        async with self.http.post(f"{url}/conversation/{conversation}", json=body, headers=headers) as r:
            r.raise_for_status()
            stream = await r.read()
        await self._done(STEPS[2])
        url, headers = self._next()
        async with self.http.delete(f"{url}/conversation/{conversation}", headers=headers) as r:
            r.raise_for_status()
        await self._done(STEPS[3])
        return stream.decode()


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


async def _conversations(urls: list[str], count: int, concurrency: int) -> float:
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as http:

        async def one(index: int) -> None:
            async with limit:
                stream = await _Protocol(http, urls).conversation(index)
                if ANSWER not in stream:
                    raise RuntimeError(f"an incomplete answer: {stream[-300:]!r}")

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return count / (time.perf_counter() - started)


async def _streams(urls: list[str], count: int) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=timeout) as http:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(_Protocol(http, urls).conversation(i) for i in range(count)), return_exceptions=True
        )
        wall = time.perf_counter() - started
    completed = sum(1 for r in results if isinstance(r, str) and ANSWER in r)
    errors = sorted({_describe(r) for r in results if not isinstance(r, str)})
    return {"completed": completed, "wall": wall, "errors": errors}


def _describe(error: object) -> str:
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{error.request_info.method} {error.request_info.url.path.split('/')[1]}: HTTP {error.status}"
    return repr(error)[:160]
