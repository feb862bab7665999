"""Crashes and shutdowns with streams open: kill -9, SIGTERM, and a model that fails mid-answer.

kill -9: each round completes a few conversations (confirmed ``done`` by the
server), opens a few slow streams, kills the server while they stream, checks
the database file (integrity, the open answers still ``generating``), restarts
it on the same port and database, and checks every conversation of every
round so far: completed ones intact, interrupted ones marked, no duplicates.

SIGTERM: each open stream must get a final ``incomplete_generation`` error
event, the process must exit within a bound, and the database must hold no
half-written answer: each is ``done`` or ``interrupted`` with exactly the
text its client received.

A backend failing after N tokens: the client gets the in-stream error event
(``error_type`` generation, as ``GenerationFailed``) with the N tokens as its
partial text, and the partial answer is saved as interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from h2ochat import GenerationFailed, H2oSession
from h2ochat.server import start_server
from reliability.process import MODEL, ServerProcess, db_rows, server_config, write_config

__all__ = [
    "CrashResult",
    "FailResult",
    "SigtermResult",
    "backend_failures",
    "kill_and_restart",
    "sigterm_with_open_streams",
]

SLOW_TEXT = " ".join(f"w{i}" for i in range(400))  # 400 tokens at 0.02 s: 8 s, longer than any round
QUICK_TOKENS = 5
CHECKPOINT = 0.2  # the server's checkpoint_interval: answers in progress are saved this often


@dataclass
class Expected:
    """What a conversation must look like after the restart."""

    question: str
    answer: str | None  # None: interrupted by the crash
    round: int


@dataclass
class CrashResult:
    rounds: int = 0
    completed: int = 0
    interrupted: int = 0
    checked: int = 0  # conversation checks after restarts (each conversation is checked every later round)
    integrity_failures: int = 0
    still_generating_at_crash: int = 0
    saved_text_at_crash: int = 0  # of those, answers whose text so far had been saved (checkpoints)
    mismatches: list[str] = field(default_factory=list)
    duplicates: int = 0
    restart_seconds: list[float] = field(default_factory=list)


class _Client:
    """One session (cookie) that lives across the server's restarts."""

    def __init__(self) -> None:
        self.url = ""
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.post(self.url + path, headers={"Referer": self.url + "/"}, **kwargs) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if response.content_type == "application/json" else raw

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path) as response:
            return response.status, await response.json()

    async def accept(self) -> None:
        status, body = await self.post("/settings", data={"ethicsModalAccepted": "true", "activeModel": MODEL})
        assert status == 200, body

    async def create(self) -> str:
        status, body = await self.post("/conversation", json={"model": MODEL})
        assert status == 200, body
        return str(body["conversationId"])

    def message(self, question: str, **parameters: Any) -> dict[str, Any]:
        options = {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False}
        return {"inputs": question, "parameters": parameters, "stream": True, "options": options}


async def kill_and_restart(workdir: Path, rounds: int, completed: int = 3, streaming: int = 4) -> CrashResult:
    db = workdir / "crash.db"
    config = write_config(
        workdir / "crash.toml",
        db,
        server={"checkpoint_interval": CHECKPOINT, "max_running_answers": 0},
        text=SLOW_TEXT,
        delay=0.02,
    )
    server = ServerProcess(config, workdir / "crash.log")
    client, expected, result = _Client(), {}, CrashResult()
    try:
        client.url = server.start()
        await client.accept()
        for number in range(rounds):
            expected.update(await _complete(client, completed, number))
            streams = await _open_streams(client, streaming, number)
            await asyncio.sleep(5 * CHECKPOINT)  # long enough for the answers' text to have been saved
            server.kill()
            await _close_streams(streams)
            expected.update({conversation: Expected(question, None, number) for conversation, question, _ in streams})
            _check_file(db, result, streaming)
            restarted = time.monotonic()
            client.url = server.start()
            result.restart_seconds.append(time.monotonic() - restarted)
            await _check_all(client, expected, result)
            result.rounds += 1
    finally:
        server.stop()
        await client.http.close()
    result.completed = sum(e.answer is not None for e in expected.values())
    result.interrupted = sum(e.answer is None for e in expected.values())
    return result


async def _complete(client: _Client, count: int, number: int) -> dict[str, Expected]:
    done = {}
    for index in range(count):
        conversation, question = await client.create(), f"round {number} question {index}"
        status, _ = await client.post(
            f"/conversation/{conversation}", json=client.message(question, max_new_tokens=QUICK_TOKENS)
        )
        assert status == 200
        # Completed means the server says so: the answer is stored as done.
        status, stored = await client.get(f"/api/conversation/{conversation}")
        assert stored["messages"][-1]["status"] == "done", stored
        done[conversation] = Expected(question, " ".join(SLOW_TEXT.split()[:QUICK_TOKENS]), number)
    return done


async def _open_streams(client: _Client, count: int, number: int) -> list[tuple[str, str, aiohttp.ClientResponse]]:
    streams = []
    for index in range(count):
        conversation, question = await client.create(), f"round {number} stream {index}"
        response = await client.http.post(f"{client.url}/conversation/{conversation}", json=client.message(question))
        await response.content.readuntil(b"\n\n")  # streaming for real when the kill comes
        await response.content.readuntil(b"\n\n")
        streams.append((conversation, question, response))
    return streams


async def _close_streams(streams: list[tuple[str, str, aiohttp.ClientResponse]]) -> None:
    for _, _, response in streams:
        # The server is gone: the stream breaks, as it should.
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            await asyncio.wait_for(response.read(), 10)
        response.release()


def _check_file(db: Path, result: CrashResult, streaming: int) -> None:
    """Between the kill and the restart: the file is sound, the open answers are still 'generating'."""
    if db_rows(db, "PRAGMA integrity_check") != [("ok",)]:
        result.integrity_failures += 1
    generating = db_rows(db, "SELECT count(*) FROM messages WHERE status = 'generating'")[0][0]
    result.still_generating_at_crash += generating
    saved = "SELECT count(*) FROM messages WHERE status = 'generating' AND content != ''"
    result.saved_text_at_crash += db_rows(db, saved)[0][0]
    if generating != streaming:
        result.mismatches.append(f"{generating} answers left generating by the crash, expected {streaming}")


async def _check_all(client: _Client, expected: dict[str, Expected], result: CrashResult) -> None:
    status, listed = await client.get("/api/conversations")
    ids = [conversation["id"] for conversation in listed]
    result.duplicates += len(ids) - len(set(ids))
    if sorted(set(ids)) != sorted(expected):
        result.mismatches.append(f"the session lists {len(set(ids))} conversations, expected {len(expected)}")
    for conversation, wanted in expected.items():
        result.checked += 1
        status, stored = await client.get(f"/api/conversation/{conversation}")
        problem = _compare(status, stored, wanted)
        if problem:
            result.mismatches.append(f"{conversation} (round {wanted.round}): {problem}")


def _compare(status: int, stored: Any, wanted: Expected) -> str:
    if status != 200:
        return f"HTTP {status}"
    messages = stored["messages"]  # the tree: the system root, the question, the answer
    if len({m["id"] for m in messages}) != len(messages) or len(messages) != 3:
        return f"{len(messages)} messages: {[(m['role'], m['status']) for m in messages]}"
    root, user, answer = messages
    if root["role"] != "system" or user["parentId"] != root["id"] or answer["parentId"] != user["id"]:
        return f"the messages are not one branch: {messages}"
    if (user["role"], user["content"], user["status"]) != ("user", wanted.question, "done"):
        return f"user message {user}"
    if wanted.answer is not None:
        if (answer["content"], answer["status"], answer["finishReason"]) != (wanted.answer, "done", "length"):
            return f"completed answer changed: {answer}"
    elif answer["status"] != "interrupted" or not answer["interrupted"] or not answer["interruption"]:
        return f"interrupted answer not marked: {answer}"
    elif not SLOW_TEXT.startswith(answer["content"]):
        # The text saved while it grew (every checkpoint interval) must be a true start of the answer.
        return f"interrupted answer's text is not a start of the answer: {answer['content'][:80]!r}"
    return ""


# SIGTERM ----------------------------------------------------------------------------------------


@dataclass
class SigtermResult:
    streams: int = 0
    final_error_events: int = 0
    exit_code: int | None = None
    exit_seconds: float = 0.0
    half_written: int = 0  # answers neither done nor interrupted, or whose text is not what the client got
    problems: list[str] = field(default_factory=list)


async def sigterm_with_open_streams(workdir: Path, streams: int = 5, exit_bound: float = 20.0) -> SigtermResult:
    db = workdir / "sigterm.db"
    server = ServerProcess(
        write_config(workdir / "sigterm.toml", db, {"max_running_answers": 0}, text=SLOW_TEXT, delay=0.02),
        workdir / "sigterm.log",
    )
    client, result = _Client(), SigtermResult(streams)
    try:
        client.url = server.start()
        await client.accept()
        opened = await _open_streams(client, streams, 0)
        readers = [asyncio.ensure_future(_read_rest(response)) for _, _, response in opened]
        terminated = time.monotonic()
        server.terminate()
        received = await asyncio.gather(*readers)
        result.exit_code = await asyncio.get_running_loop().run_in_executor(None, server.wait, exit_bound)
        result.exit_seconds = time.monotonic() - terminated
        for (conversation, _, _), (texts, last) in zip(opened, received, strict=True):
            _judge_stream(conversation, texts, last, result)
            _judge_stored(db, conversation, "".join(texts), result)
    finally:
        server.stop()
        await client.http.close()
    if result.exit_code is None:
        result.problems.append(f"the server was still running {exit_bound} s after SIGTERM")
    return result


async def _read_rest(response: aiohttp.ClientResponse) -> tuple[list[str], dict[str, Any] | None]:
    """The token texts of the whole stream (the two already read included) and its last event."""
    raw = b""
    try:
        raw = await asyncio.wait_for(response.read(), 30)
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass
    finally:
        response.release()
    events = [json.loads(block[5:]) for block in raw.split(b"\n\n") if block.startswith(b"data:")]
    # The two events read before the signal: the first two words.
    texts = ["w0", " w1"] + [e["token"]["text"] for e in events if "token" in e]
    return texts, events[-1] if events else None


def _judge_stream(conversation: str, texts: list[str], last: dict[str, Any] | None, result: SigtermResult) -> None:
    if last is not None and last.get("error_type") == "incomplete_generation" and "shutting down" in last["error"]:
        result.final_error_events += 1
    else:
        result.problems.append(f"{conversation}: the stream ended with {last!r}, not an error event")


def _judge_stored(db: Path, conversation: str, received: str, result: SigtermResult) -> None:
    rows = db_rows(
        db, "SELECT role, status, content FROM messages WHERE conversation_id = ? ORDER BY position", conversation
    )
    answer = rows[-1] if rows else None
    if answer is None or answer[0] != "assistant" or answer[1] not in ("done", "interrupted") or answer[2] != received:
        result.half_written += 1
        result.problems.append(f"{conversation}: stored {answer!r}, the client received {received[:60]!r}")


# A backend that fails mid-answer -----------------------------------------------------------------


@dataclass
class FailResult:
    runs: int = 0
    typed: int = 0  # GenerationFailed with error_type "generation" and the right partial text
    saved_interrupted: int = 0  # the partial answer stored as interrupted, with that text
    problems: list[str] = field(default_factory=list)


async def backend_failures(runs: int, seed: int) -> FailResult:
    """``runs`` answers from a backend that fails after a random number of tokens (in-process server)."""
    rng, result = random.Random(seed), FailResult()
    words = SLOW_TEXT.split()[:20]
    for _ in range(runs):
        fail_after = rng.randint(0, len(words) - 1)
        async with start_server(server_config(text=" ".join(words), fail_after=fail_after)) as server:
            await _one_failure(server.url, fail_after, " ".join(words[:fail_after]), result)
        result.runs += 1
    return result


async def _one_failure(url: str, fail_after: int, partial: str, result: FailResult) -> None:
    async with H2oSession(url, prefetch=False) as session:
        stream = session.stream([{"role": "user", "content": "Hi"}], MODEL)
        try:
            await stream.text()
            result.problems.append(f"fail_after={fail_after}: the answer completed")
            return
        except GenerationFailed as exc:
            if exc.error_type == "generation" and exc.partial_text == partial:
                result.typed += 1
            else:
                result.problems.append(f"fail_after={fail_after}: {exc!r} partial {exc.partial_text!r}")
    # The client deleted its conversation, as it must; what the server stores is read
    # back through a second conversation, made and left in place by a raw client.
    await _stored_after_failure(url, fail_after, partial, result)


async def _stored_after_failure(url: str, fail_after: int, partial: str, result: FailResult) -> None:
    client = _Client()
    client.url = url
    try:
        await client.accept()
        conversation = await client.create()
        _, raw = await client.post(f"/conversation/{conversation}", json=client.message("Hi"))
        events = [json.loads(block[5:]) for block in raw.split(b"\n\n") if block.startswith(b"data:")]
        if events[-1].get("error_type") != "generation":
            result.problems.append(f"fail_after={fail_after}: last event {events[-1]}")
        _, stored = await client.get(f"/api/conversation/{conversation}")
        answer = stored["messages"][-1]
        if answer["status"] == "interrupted" and answer["content"] == partial:
            result.saved_interrupted += 1
        else:
            result.problems.append(f"fail_after={fail_after}: stored {answer}")
    finally:
        await client.http.close()
