"""Issue 13's attacks, replayed against a real server: each one counted, none may succeed.

Cross-site writes (a no-cors Blob from a sibling page, forms without a
Referer, JSON with a foreign Origin), DNS rebinding, forged log lines, the
inputs that used to end in a 500, a full model queue, session fixation and
the things that grew without bound (sessions, conversations). The figures
go into ``python -m reliability``'s table (suite ``attacks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from msgspec.structs import replace

from h2ochat.server import ModelConfig, start_server
from h2ochat.server.config import FixedEndpoint
from reliability.process import MODEL, server_config

__all__ = ["AttackFigures", "run_attacks"]


@dataclass
class AttackFigures:
    cross_site_tries: int = 0
    cross_site_accepted: int = 0
    rebinding_tries: int = 0
    rebinding_accepted: int = 0
    responses_checked: int = 0
    missing_security_headers: int = 0
    forged_log_lines: int = 0
    former_500_tries: int = 0
    statuses_500: int = 0  # internal errors; a 503 "try again later" from a failing model is an answer
    former_500_statuses: dict[str, int] = field(default_factory=dict)
    queue_requests: int = 0
    queue_refused_at_once: int = 0
    queue_slowest_refusal_s: float = 0.0
    queue_completed: int = 0
    planted_cookies_adopted: int = 0
    cookieless_settings: int = 0
    sessions_created: int = 0
    conversations_tried: int = 0
    conversations_accepted: int = 0
    database_bytes: int = 0


class _LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _status(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> int:
    async with http.request(method, url, allow_redirects=False, **kwargs) as response:
        await response.read()
        return response.status


async def _accepted_session(http: aiohttp.ClientSession, url: str) -> str:
    form = {"ethicsModalAccepted": "true", "activeModel": MODEL}
    assert await _status(http, "POST", url + "/settings", data=form, headers={"Referer": url + "/"}) == 200
    async with http.post(url + "/conversation", json={"model": MODEL}) as response:
        return str((await response.json())["conversationId"])


async def _cross_site(url: str, figures: AttackFigures) -> None:
    """What a hostile page can make a browser send with the victim's cookie."""
    async with _browser() as victim:
        conversation = await _accepted_session(victim, url)
        blob = b'{"inputs": "hi", "options": {"id": "%s", "response_id": "%s", "is_retry": false}}' % (
            str(uuid.uuid4()).encode(),
            str(uuid.uuid4()).encode(),
        )
        sibling = {"Origin": "http://sibling.example"}
        attempts: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/conversation", {"data": b'{"model": "test/fixed"}', "headers": sibling}),
            ("POST", f"/conversation/{conversation}", {"data": blob, "headers": sibling}),
            ("POST", f"/conversation/{conversation}/stop-generating", {"headers": sibling}),
            ("POST", "/generate", {"data": b'{"inputs": "hi"}', "headers": sibling}),
            ("POST", "/conversation", {"data": b'{"model": "test/fixed"}'}),  # no Origin, no type
            ("POST", "/settings", {"data": {"ethicsModalAccepted": "true"}}),  # a form without Referer
            ("POST", "/conversation", {"json": {"model": MODEL}, "headers": {"Origin": "http://evil.example"}}),
            ("DELETE", f"/conversation/{conversation}", {"headers": sibling}),
            ("PATCH", f"/conversation/{conversation}", {"json": {"title": "x"}, "headers": sibling}),
        ]
        for _ in range(10):
            for method, path, kwargs in attempts:
                figures.cross_site_tries += 1
                if await _status(victim, method, url + path, **kwargs) < 400:
                    figures.cross_site_accepted += 1


async def _rebinding(url: str, figures: AttackFigures) -> None:
    port = url.rsplit(":", 1)[1]
    async with _browser() as http:
        for name in ("evil.example", "127.0.0.1.nip.example", "localhost.evil.example"):
            host = f"{name}:{port}"
            for method, path in [("GET", "/api/conversations"), ("POST", "/settings"), ("GET", "/api/models")]:
                figures.rebinding_tries += 1
                headers = {"Host": host, "Referer": f"http://{host}/"}
                if await _status(http, method, url + path, headers=headers, data={"a": "b"}) < 400:
                    figures.rebinding_accepted += 1


async def _headers_and_logs(url: str, figures: AttackFigures, lines: _LogLines) -> None:
    wanted = ("X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options")
    async with aiohttp.ClientSession() as http:
        for method, path in [("GET", "/"), ("GET", "/api/models"), ("GET", "/nope"), ("POST", "/generate")]:
            async with http.request(method, url + path, json={"inputs": "hi"}) as response:
                figures.responses_checked += 1
                figures.missing_security_headers += sum(name not in response.headers for name in wanted)
        for forged in ("/x%0aINFO forged", "/x%0d%0aINFO forged", "/x%e2%80%a8forged", "/x%00forged"):
            await _status(http, "GET", url + forged)
    figures.forged_log_lines = sum(
        1 for line in lines.lines if "forged" in line and any(c in line for c in "\n\r\0\u2028")
    )


async def _former_500s(url: str, figures: AttackFigures) -> None:
    statuses: Counter[int] = Counter()
    async with _browser() as http:
        conversation = await _accepted_session(http, url)
        # Two posts reusing options.id at once, 20 times.
        for _ in range(20):
            reused = str(uuid.uuid4())
            bodies = [
                {"inputs": "hi", "options": {"id": reused, "response_id": str(uuid.uuid4()), "is_retry": False}}
                for _ in range(2)
            ]
            results = await asyncio.gather(
                *(_status(http, "POST", f"{url}/conversation/{conversation}", json=body) for body in bodies)
            )
            statuses.update(results)
        # A DELETE while the message body is still uploading, 20 times.
        for _ in range(20):
            doomed = await _accepted_session(http, url)
            statuses.update(await _delete_during_upload(http, url, doomed))
        statuses[
            await _status(http, "POST", f"{url}/conversation/{conversation}/summarize", headers={"Origin": url})
        ] += 1
        for parameter, value in [("seed", 2**32), ("top_k", 2**70)]:
            body = {"inputs": "hi", "parameters": {parameter: value}}
            statuses[await _status(http, "POST", url + "/generate", json=body)] += 1
    figures.former_500_tries = sum(statuses.values())
    figures.statuses_500 = statuses[500]
    figures.former_500_statuses = {str(status): count for status, count in sorted(statuses.items())}


async def _delete_during_upload(http: aiohttp.ClientSession, url: str, conversation: str) -> list[int]:
    options = {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False}
    body = json.dumps({"inputs": "hi", "options": options}).encode()

    async def slow_body() -> Any:
        yield body[:10]
        await asyncio.sleep(0.2)
        yield body[10:]

    posting = asyncio.ensure_future(
        _status(
            http,
            "POST",
            f"{url}/conversation/{conversation}",
            data=slow_body(),
            headers={"Content-Type": "application/json"},
        )
    )
    await asyncio.sleep(0.05)
    deleted = await _status(http, "DELETE", f"{url}/conversation/{conversation}", headers={"Referer": url + "/"})
    return [deleted, await posting]


async def _queue(figures: AttackFigures) -> None:
    """Twelve requests at once for a model with one place and a queue of four."""
    endpoint = FixedEndpoint(text="one two three four five", delay=0.05, max_concurrency=1)
    model = ModelConfig(name=MODEL, endpoints=[endpoint], max_queue=4)
    async with start_server(replace(server_config(), models=[model])) as server, aiohttp.ClientSession() as http:

        async def one() -> tuple[int, float]:
            started = time.monotonic()
            status = await _status(http, "POST", server.url + "/generate", json={"inputs": "hi"})
            return status, time.monotonic() - started

        results = await asyncio.gather(*(one() for _ in range(12)))
    refused = [seconds for status, seconds in results if status == 429]
    figures.queue_requests = len(results)
    figures.queue_refused_at_once = len(refused)
    figures.queue_slowest_refusal_s = round(max(refused, default=0.0), 3)
    figures.queue_completed = sum(1 for status, _ in results if status == 200)


async def _sessions(url: str, figures: AttackFigures, count: int) -> None:
    # Conversations first: the cookie-less flood below uses up this address's new sessions.
    async with _browser() as http:
        await _accepted_session(http, url)
        for _ in range(count):
            figures.conversations_tried += 1
            if await _status(http, "POST", url + "/conversation", json={"model": MODEL}) == 200:
                figures.conversations_accepted += 1
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        planted = "0123456789abcdef0123456789abcdef"
        headers = {"Referer": url + "/", "Cookie": f"hf-chat={planted}"}
        async with http.post(url + "/settings", data={"ethicsModalAccepted": "true"}, headers=headers) as response:
            figures.planted_cookies_adopted = int(planted in response.headers.get("Set-Cookie", ""))
        for _ in range(count):
            await _status(http, "POST", url + "/settings", data={"a": "b"}, headers={"Referer": url + "/"})
            figures.cookieless_settings += 1


async def run_attacks(workdir: Path, count: int = 3000) -> AttackFigures:
    """Every attack against one server on a SQLite file in ``workdir``; ``count``: the unbounded-growth runs."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any server runs
    db = workdir / "attacks.db"
    figures = AttackFigures()
    lines = _LogLines()
    logger = logging.getLogger()
    logger.addHandler(lines)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        config = replace(server_config(str(db), text="Hello there."), rate_limit_per_minute=0)
        async with start_server(config) as server:
            await _cross_site(server.url, figures)
            await _rebinding(server.url, figures)
            await _headers_and_logs(server.url, figures, lines)
            await _sessions(server.url, figures, count)
        async with start_server(replace(server_config(str(workdir / "failing.db"), fail_after=1))) as server:
            await _former_500s(server.url, figures)
        await _queue(figures)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(previous)
    figures.sessions_created = _count(db, "sessions")
    figures.database_bytes = sum(path.stat().st_size for path in workdir.glob("attacks.db*"))  # noqa: ASYNC240
    return figures


def _count(db: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(count)
