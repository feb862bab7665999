"""A raw client of today's chat-ui protocol for the server's tests: multipart posts with ``Origin``,
the answer decoded with the project's own decoder (protocol/chatui.py)."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import aiohttp

from h2ochat.protocol import superjson
from h2ochat.protocol.chatui import ChatUIStreamDecoder, MessageUpdate
from h2ochat.protocol.chatui_bodies import decode_create_answer
from tests.helpers import FIXED_MODEL

__all__ = ["Current", "last_answer", "multipart", "updates"]


def multipart(data: str | bytes | None, **files: bytes) -> aiohttp.MultipartWriter:
    """A ``multipart/form-data`` body with the ``data`` part (None: without it) and ``files`` parts."""
    writer = aiohttp.MultipartWriter("form-data")
    if data is not None:
        raw = data.encode() if isinstance(data, str) else data
        # A stream rather than bytes: aiohttp warns about sending a large body (the 413 test) as bytes.
        part = writer.append(io.BytesIO(raw), {"Content-Type": "text/plain; charset=utf-8"})
        part.set_content_disposition("form-data", name="data")
    for name, content in files.items():
        part = writer.append(content, {"Content-Type": "text/plain"})
        part.set_content_disposition("form-data", name="files", filename=f"base64;{name}")
    return writer


class Current:
    """One session (cookie) speaking today's protocol: JSON with ``Accept``, forms with ``Origin``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = {"Origin": self.url, "Accept": "application/json", **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url + path, headers=headers, **kwargs) as response:
            raw = await response.read()
        body: Any = json.loads(raw) if response.content_type == "application/json" and raw else raw
        return response.status, body, response

    async def start(self) -> None:
        """The first POST as the page of today sends it: a session, and the welcome dialog seen."""
        status, body, _ = await self.request("POST", "/api/v2/user/settings", json={"welcomeModalSeen": True})
        assert status == 200, body

    async def create(self, model: str = FIXED_MODEL, **fields: Any) -> tuple[str, str]:
        """A new conversation's id and its root message id, read from the create answer."""
        status, body, _ = await self.request("POST", "/conversation", json={"model": model, **fields})
        assert status == 200, body
        created = decode_create_answer(json.dumps(body))
        assert created.root_message_id is not None
        return created.id, created.root_message_id

    async def post(
        self, conversation: str, data: dict[str, Any] | str | None, **files: bytes
    ) -> tuple[int, bytes, aiohttp.ClientResponse]:
        raw = json.dumps(data) if isinstance(data, dict) else data
        async with self.http.post(
            f"{self.url}/conversation/{conversation}",
            data=multipart(raw, **files),
            headers={"Origin": self.url, "Accept": "application/json"},
        ) as response:
            return response.status, await response.read(), response

    async def send(self, conversation: str, parent: str, inputs: str | None = "Hi", **fields: Any) -> bytes:
        """A turn whose answer must stream: the raw bytes of it."""
        data: dict[str, Any] = {"id": parent, "generationId": str(uuid.uuid4()), **fields}
        if inputs is not None:
            data["inputs"] = inputs
        status, raw, response = await self.post(conversation, data)
        assert status == 200, raw
        assert response.content_type == "application/jsonl"
        return raw

    async def read(self, conversation: str) -> dict[str, Any]:
        status, body, _ = await self.request("GET", f"/api/v2/conversations/{conversation}")
        assert status == 200, body
        value = superjson.decode(body)
        assert isinstance(value, dict)
        return value


def updates(raw: bytes) -> list[MessageUpdate]:
    """Every update of a raw stream, keep-alives skipped and padding stripped by the project's decoder."""
    decoder = ChatUIStreamDecoder()
    return [*decoder.decode(raw), *decoder.flush()]


def last_answer(conversation: dict[str, Any]) -> dict[str, Any]:
    """The newest assistant message, as hugchat and gpt4free find the parent of their next turn."""
    return [m for m in conversation["messages"] if m["from"] == "assistant"][-1]
