"""The recorded exchange with a real current chat-ui server (tests/data/chatui-current/), read back.

The file holds each request and response byte for byte, each after a marker
line that gives its size: ``#### RESPONSE 3-message POST /conversation/<id> (t=0.39s) (5482 bytes)``.
Responses keep their chunked transfer encoding, so the chunks the server wrote
are known too: the first way any decoder must cope with the stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

EXCHANGE = Path(__file__).parent / "data" / "chatui-current" / "exchange.txt"
_MARKER = re.compile(rb"#### (REQUEST|RESPONSE) (\S+) (\S+) (\S+)(?: \(t=[^)]*\))? \((\d+) bytes\)\n")


@dataclass(frozen=True)
class Message:
    kind: str  # "REQUEST" or "RESPONSE"
    name: str  # "3-message"
    method: str
    path: str
    raw: bytes  # head and body as sent

    @property
    def head(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[0]

    @property
    def chunks(self) -> list[bytes]:
        """The body of a chunked response, one item per chunk as the server wrote it."""
        body = self.raw.partition(b"\r\n\r\n")[2]
        chunks: list[bytes] = []
        while True:
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                return chunks
            chunks.append(body[:size])
            if body[size : size + 2] != b"\r\n":
                raise ValueError(f"chunk {len(chunks)} of {self.name} does not end with CRLF")
            body = body[size + 2 :]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks) if self.kind == "RESPONSE" else self.raw.partition(b"\r\n\r\n")[2]


@cache
def messages() -> tuple[Message, ...]:
    data = EXCHANGE.read_bytes()
    found: list[Message] = []
    position = 0
    while position < len(data):
        marker = _MARKER.match(data, position)
        if marker is None:
            raise ValueError(f"{EXCHANGE}: no marker line at byte {position}")
        kind, name, method, path, size = (part.decode() for part in marker.groups())
        start = marker.end()
        found.append(Message(kind, name, method, path, data[start : start + int(size)]))
        position = start + int(size)
        if data[position : position + 1] == b"\n":  # the separator before the next marker
            position += 1
    return tuple(found)


def response(name: str) -> Message:
    return next(m for m in messages() if m.kind == "RESPONSE" and m.name == name)


def request(name: str) -> Message:
    return next(m for m in messages() if m.kind == "REQUEST" and m.name == name)
