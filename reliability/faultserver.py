"""A chat-ui double on raw asyncio streams, so that a fault can sit at any byte of any answer.

aiohttp's server cannot reset a connection in the middle of its own headers or
stop between two bytes of a chunk; this double writes every answer itself. It
speaks just enough HTTP/1.1 for the client's four steps (Content-Length bodies,
keep-alive, a chunked event stream) and keeps the books a leak check needs:
which conversations were created, which answers reached the client whole,
which were asked to be deleted and which were deleted.

A :class:`Fault` hits the next answer(s) of one step: ``reset`` (TCP RST) or
``close`` (FIN) after a fraction of the answer's bytes, ``stall`` there until
the client gives up, or ``replace`` the whole answer with other bytes (an
error status, a wrong content type, a broken event stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import secrets
import socket
import ssl
import struct
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field

from h2ochat.protocol.tgi import Details, Token, encode_stream_event

__all__ = [
    "ACTIONS",
    "STEPS",
    "Fault",
    "FaultServer",
    "Request",
    "answer_events",
    "bytes_before_event",
    "http_response",
    "stream_response",
]

STEPS = ("settings", "conversation", "message", "delete")
ACTIONS = ("reset", "close", "stall", "replace")
COOKIE = "hf-chat"
STALL_CAP = 120.0  # a stalled answer gives up on its own after this long, whatever the client does


@dataclass(frozen=True)
class Fault:
    """What happens to the next ``times`` answers of ``step``.

    ``at`` is where a cut or stall happens, as a fraction of the answer's bytes
    (0: before the first byte), or ``offset`` in bytes when given. ``response``
    is the answer sent by ``replace``. ``before``: the fault strikes in front of
    the server (a broken path to it), which then never sees the request.
    """

    step: str
    action: str
    at: float = 0.0
    response: bytes = b""
    times: int = 1
    offset: int | None = None
    before: bool = False

    def cut(self, answer: bytes) -> bytes:
        """The part of ``answer`` sent before the fault strikes (never the whole of it)."""
        end = int(self.at * len(answer)) if self.offset is None else self.offset
        return answer[: min(end, len(answer) - 1)]

    def __post_init__(self) -> None:
        if self.step not in STEPS or self.action not in ACTIONS or not 0 <= self.at < 1:
            raise ValueError(f"bad fault: {self}")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def step(self) -> str:
        if self.path.startswith("/api/"):
            return "probe"  # the client's GET /api/v2/models: this server speaks 2023's protocol only
        if self.path == "/settings":
            return "settings"
        if self.path == "/conversation":
            return "conversation"
        return "delete" if self.method == "DELETE" else "message"

    @property
    def session(self) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value:
                return value
        return None


def http_response(
    status: int,
    body: bytes = b"",
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A whole HTTP/1.1 answer with a Content-Length body."""
    lines = [f"HTTP/1.1 {status} {_phrase(status)}", f"Content-Length: {len(body)}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    # UTF-8, so that a test can send a header with a non-ASCII digit (aiohttp decodes headers as UTF-8).
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def stream_response(events: list[bytes], content_type: str = "text/event-stream") -> bytes:
    """A 200 event stream, one chunk per event, properly terminated."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in events if event)
    return head + chunks + b"0\r\n\r\n"


def bytes_before_event(events: list[bytes], index: int) -> int:
    """How many bytes of ``stream_response(events)`` come before event ``index`` starts."""
    return len(stream_response(events[:index])) - len(b"0\r\n\r\n")


def answer_events(*texts: str) -> list[bytes]:
    """A normal TGI answer: one event per text, then the EOS event carrying the whole text."""
    events = [encode_stream_event(Token(id=index, text=text, logprob=-0.5)) for index, text in enumerate(texts)]
    final = Token(id=0, text="</s>", logprob=-0.1, special=True)
    events.append(encode_stream_event(final, "".join(texts), Details("eos_token", len(texts) + 1, None)))
    return events


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@dataclass
class FaultServer:
    """The double. ``await start()`` gives its root URL; ``events`` is the next answer's stream."""

    ssl_context: ssl.SSLContext | None = None
    events: list[bytes] = field(default_factory=lambda: answer_events("Hello", " world"))
    created: list[str] = field(default_factory=list)
    announced: set[str] = field(default_factory=set)  # creation answers that reached the client whole
    deleted: set[str] = field(default_factory=set)
    delete_requests: Counter[str] = field(default_factory=Counter)
    requests: list[tuple[str, str]] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    faults: dict[str, deque[Fault]] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    # Scripting ----------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        queue = self.faults.setdefault(fault.step, deque())
        queue.extend([fault] * fault.times)

    @property
    def leaked(self) -> set[str]:
        """Conversations the client knew of and never asked to delete."""
        return {c for c in self.announced if c not in self.deleted and not self.delete_requests[c]}

    @property
    def undeleted(self) -> set[str]:
        """Conversations the client asked to delete, where every delete was refused by a fault."""
        return {c for c in self.announced if c not in self.deleted and self.delete_requests[c]}

    @property
    def orphaned(self) -> set[str]:
        """Conversations whose creation answer was lost: no client can know their id."""
        return {c for c in self.created if c not in self.announced and c not in self.deleted}

    # Running --------------------------------------------------------------------------------

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=self.ssl_context)
        port = self._server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> FaultServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError, ValueError):
            pass  # the client went away or sent something this double does not speak
        except asyncio.CancelledError:
            pass  # closing; returning normally keeps asyncio from logging the cancelled handler
        finally:
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read and answer one request; False when the connection is finished."""
        request = await _read_request(reader, writer)
        if request is None:
            return False
        self.requests.append((request.method, request.path))
        queue = self.faults.get(request.step)
        fault = queue.popleft() if queue else None
        if request.step == "delete" and not (fault is not None and fault.before):
            self.delete_requests[request.path.removeprefix("/conversation/")] += 1
        if fault is not None and fault.action == "replace":
            await _write(writer, fault.response)
            return True
        if fault is not None and fault.before:
            await _strike(fault, reader, writer)
            return False
        answer, conversation = self._answer(request)
        if fault is None:
            await _write(writer, answer)
            if conversation is not None:
                self.announced.add(conversation)
            return True
        # The server did its work; only the answer is harmed (a lost or late answer).
        await _write(writer, fault.cut(answer))
        await _strike(fault, reader, writer)
        return False

    def _answer(self, request: Request) -> tuple[bytes, str | None]:
        """The normal answer to ``request`` and, for a creation, the conversation id."""
        session = request.session or str(uuid.uuid4())
        cookie = {"Set-Cookie": f"{COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"}
        step = request.step
        if step == "probe":
            return http_response(404, b'{"message": "Not found"}'), None
        if step == "settings":
            body = {"type": "redirect", "status": 303, "location": request.headers.get("referer", "/")}
            return http_response(200, json.dumps(body).encode(), headers=cookie), None
        if step == "conversation":
            conversation = secrets.token_hex(12)
            self.created.append(conversation)
            self.owners[conversation] = session
            return http_response(
                200, json.dumps({"conversationId": conversation}).encode(), headers=cookie
            ), conversation
        conversation = request.path.removeprefix("/conversation/")
        if self.owners.get(conversation) != session or conversation in self.deleted:
            return http_response(404, b'{"message": "Conversation not found"}'), None
        if step == "delete":
            self.deleted.add(conversation)
            return http_response(200, content_type=None), None
        return stream_response(self.events), None


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    try:
        first = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        return None  # the client closed an idle keep-alive connection
    if not first.isalpha():
        # Not HTTP (a TLS ClientHello to this plain server): refuse it as real servers do.
        await _write(writer, http_response(400, b"not HTTP", "text/plain", {"Connection": "close"}))
        return None
    head = first + await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    if "://" in path:  # absolute-form, as a forwarding proxy sends it
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


async def _strike(fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if fault.action == "stall":
        await _wait_for_eof(reader)
    elif fault.action == "reset":
        _reset(writer)


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    if data:
        writer.write(data)
        await writer.drain()


async def _wait_for_eof(reader: asyncio.StreamReader) -> None:
    """A stall: send nothing more until the client hangs up (or the cap passes)."""

    async def drain() -> None:
        while await reader.read(65536):
            pass

    with contextlib.suppress(asyncio.TimeoutError, ConnectionError, ssl.SSLError):
        await asyncio.wait_for(drain(), STALL_CAP)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN: SO_LINGER with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
