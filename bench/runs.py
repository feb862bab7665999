"""The cost of resumable answers (issue 22): tokens per second and statements per answer, with the
run log and without it (``resumable_answers = false``), on SQLite and, where installed, PostgreSQL.

A server in this process on the fixed backend (no delay: the model is as fast as it gets, so the log's
cost shows in full) answers ``answers`` questions one after another, each ``tokens`` tokens, to a
plain aiohttp client reading chat-ui 2023's stream; each repeat runs both settings back to back.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from msgspec.structs import replace

from bench.common import Section, Target
from bench.replicas import _cluster
from h2ochat.server import start_server
from h2ochat.server.chatui.runs import RUNS
from h2ochat.server.config import FixedEndpoint, ModelConfig, ServerConfig
from h2ochat.server.edge.http import STORE

__all__ = ["run"]

MODEL = "bench/fixed"


def run(*, answers: int = 20, tokens: int = 1000, repeats: int = 3) -> Section:
    section = Section(
        "runs",
        "10. Resumable answers: the run log's cost",
        "x without the log",
        parameters={"answers": answers, "tokens": tokens, "repeats": repeats},
    )
    with tempfile.TemporaryDirectory(prefix="h2ochat-bench-") as scratch, _cluster() as cluster:
        databases = [("SQLite", lambda name: str(Path(scratch) / f"{name}.db"))]
        if cluster is not None:
            databases.append(("PostgreSQL", lambda _name: cluster.create_database()))
        for label, make in databases:
            rates: dict[str, list[float]] = {"with the log": [], "without": []}
            statements: dict[str, list[float]] = {"with the log": [], "without": []}
            for repeat in range(repeats):
                for name, resumable in (("with the log", True), ("without", False)):
                    rate, per_answer = asyncio.run(_answers(make(f"{repeat}-{resumable}"), resumable, answers, tokens))
                    rates[name].append(rate)
                    statements[name].append(per_answer)
            case = f"{label}: {answers} answers of {tokens} tokens, one at a time"
            for name in rates:
                section.add(case, name, rates[name], "tokens/s")
            section.against(case, "without", higher_is_better=True)
            for name in statements:
                section.add(f"{label}: statements per answer", name, statements[name], "statements")
            ratio = section.row(case, "with the log").ratio
            section.targets.append(
                Target(
                    f"{label}: the log costs at most 10% of tokens/s",
                    ratio is not None and ratio >= 0.9,
                    f"{ratio:.2f}x" if ratio is not None else "no ratio",
                )
            )
        if cluster is None:
            section.notes.append("PostgreSQL is not installed here (apt-get install -y postgresql): SQLite only.")
    section.notes.append(
        "With the log, each answer adds a run row, its events written every run_log_interval (0.25 s) in one "
        "statement, and its end; the answer's own statements (the exchange, checkpoints, the save) are the same."
    )
    return section


async def _answers(db: str, resumable: bool, answers: int, tokens: int) -> tuple[float, float]:
    text = " ".join(f"w{index}" for index in range(tokens))
    endpoint = FixedEndpoint(text=text)
    config = ServerConfig(port=0, db=db, models=[ModelConfig(name=MODEL, endpoints=[endpoint])])
    config = replace(config, welcome_gate=False, resumable_answers=resumable, keepalive_interval=60.0)
    async with start_server(config) as server, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        headers = {"Referer": server.url + "/"}
        conversations = []
        for _ in range(answers):
            async with http.post(f"{server.url}/conversation", json={"model": MODEL}, headers=headers) as response:
                conversations.append((await response.json())["conversationId"])
        store = server.app[STORE]
        before, started = store.statements, time.perf_counter()
        for conversation in conversations:
            await _answer(http, server.url, conversation, headers)
        elapsed = time.perf_counter() - started
        await _settled(server.app)
        return answers * tokens / elapsed, (store.statements - before) / answers


async def _answer(http: aiohttp.ClientSession, url: str, conversation: str, headers: dict[str, str]) -> None:
    options = {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False}
    body: dict[str, Any] = {"inputs": "Hi", "parameters": {}, "stream": True, "options": options}
    async with http.post(f"{url}/conversation/{conversation}", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        await response.read()


async def _settled(app: Any) -> None:
    """Every run's log and end written, so that its statements are counted."""
    if RUNS in app:
        await app[RUNS].wait(30.0)
