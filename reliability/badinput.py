"""Random and malformed requests against the server, sent over raw sockets, and how it answered.

The requests come from :mod:`reliability.junk`. The rule: never a 5xx, and
every 4xx a JSON body that says what was wrong. Requests so malformed that
aiohttp's HTTP parser refuses them before routing get aiohttp's own plain
400, a known limit that is counted apart.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = [
    "Answer",
    "Context",
    "RawRequest",
    "Tally",
    "message_body",
    "prepare",
    "send",
    "verdict",
]

MODEL = "test/fixed"


@dataclass
class RawRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    raw: bytes | None = None  # bytes sent as they are (malformed HTTP), instead of the fields above

    def encode(self, host: str) -> bytes:
        if self.raw is not None:
            return self.raw
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body

    def header(self, name: str) -> str:
        return next((value for key, value in self.headers if key.lower() == name.lower()), "")

    def describe(self) -> str:
        if self.raw is not None:
            return f"raw {self.raw[:80]!r}"
        return f"{self.method} {self.path[:60]} [{self.header('Content-Type')[:40]}] {self.body[:60]!r}"


@dataclass
class Answer:
    status: int  # 0: no answer
    headers: dict[str, str]
    body: bytes
    error: str = ""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()


@dataclass
class Context:
    """What the requests may refer to: two sessions with a conversation each."""

    url: str
    cookies: dict[str, str]  # name -> "hf-chat=<session>"
    conversations: dict[str, str]  # name -> conversation id (owned by the session of the same name)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]


async def prepare(url: str) -> Context:
    """Two sessions (alice, bob) past the welcome gate, each with one conversation that has a message."""
    cookies, conversations = {}, {}
    for name in ("alice", "bob"):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            referer = {"Referer": url + "/"}
            form = {"ethicsModalAccepted": "true", "activeModel": MODEL}
            async with http.post(f"{url}/settings", data=form, headers=referer) as response:
                assert response.status == 200, await response.text()
            async with http.post(f"{url}/conversation", json={"model": MODEL}) as response:
                conversation = (await response.json())["conversationId"]
            async with http.post(f"{url}/conversation/{conversation}", json=message_body("hello")) as response:
                await response.read()
            session = next(cookie.value for cookie in http.cookie_jar if cookie.key == "hf-chat")
        cookies[name] = f"hf-chat={session}"
        conversations[name] = conversation
    return Context(url, cookies, conversations)


def message_body(inputs: str) -> dict[str, Any]:
    return {
        "inputs": inputs,
        "parameters": {"max_new_tokens": 8},
        "stream": True,
        "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False},
    }


# Sending ----------------------------------------------------------------------------------------


async def send(context: Context, request: RawRequest, timeout: float = 15.0) -> Answer:
    """One request on its own connection; the whole answer (the server closes it: Connection: close)."""
    host, port = context.host.rsplit(":", 1)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return Answer(0, {}, b"", f"could not connect: {exc!r}")
    chunks: list[bytes] = []

    async def read_all() -> None:
        while chunk := await reader.read(65536):
            chunks.append(chunk)

    # Read while writing: a server that refuses a request early closes the connection
    # before a big body is sent, and its answer must not be lost to the reset.
    reading = asyncio.ensure_future(read_all())
    error = ""
    try:
        writer.write(request.encode(context.host))
        await writer.drain()
    except OSError as exc:
        error = repr(exc)
    try:
        await asyncio.wait_for(reading, timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        error = error or repr(exc)
    finally:
        writer.close()
    raw = b"".join(chunks)
    return _parse(raw) if raw else Answer(0, {}, b"", f"no answer: {error}")


def _parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ")[1])
    except (IndexError, ValueError):
        return Answer(0, {}, raw, "not an HTTP answer")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    return Answer(status, headers, body)


def _unchunk(body: bytes) -> bytes:
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)


# Judging ----------------------------------------------------------------------------------------


def verdict(request: RawRequest, answer: Answer) -> str:
    """``ok`` (2xx/3xx), ``json 4xx``, ``parser 400`` (aiohttp's own, known limit),
    or a failure: ``5xx``, ``bad 4xx``, ``no answer``."""
    if answer.status == 0:
        return "no answer"
    if answer.status < 400:
        return "ok"
    if answer.status >= 500:
        return "5xx"
    if answer.content_type == "text/plain" and answer.status == 400 and _parser_refusal(answer):
        return "parser 400"
    if answer.content_type != "application/json":
        return "bad 4xx"
    if request.method == "HEAD":
        return "json 4xx"  # no body by definition
    return "json 4xx" if _says_what(answer.body) else "bad 4xx"


def _parser_refusal(answer: Answer) -> bool:
    # aiohttp's low-level refusal: "400, message: ..." or the reason text, never JSON.
    return not answer.body.lstrip().startswith(b"{")


def _says_what(body: bytes) -> bool:
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    if not isinstance(payload, dict):
        return False
    for key in ("message", "error"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            return True
        if isinstance(value, dict) and isinstance(value.get("message"), str) and value["message"]:
            return True
    return False


@dataclass
class Tally:
    """Verdicts of many requests, with a few examples of each failure."""

    verdicts: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, request: RawRequest, answer: Answer) -> str:
        judged = verdict(request, answer)
        self.verdicts[judged] += 1
        self.statuses[answer.status] += 1
        if judged not in ("ok", "json 4xx"):
            shown = self.examples.setdefault(judged, [])
            if len(shown) < 5:
                shown.append(f"{request.describe()} -> {answer.status} {answer.body[:100]!r} {answer.error}")
        return judged

    @property
    def failures(self) -> int:
        return sum(n for v, n in self.verdicts.items() if v in ("5xx", "bad 4xx", "no answer"))

    @property
    def total(self) -> int:
        return sum(self.verdicts.values())
