"""What tests import: the fixed test model and its configuration, a raw HTTP client, the event parser.

Fixtures live in conftest.py; plain helpers live here, so that tests import
them from a module of their own rather than from pytest's fixture file.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp

from h2ochat.server import ModelConfig, ServerConfig
from h2ochat.server.config import FixedEndpoint
from h2ochat.server.storage import Store

__all__ = ["FIXED_MODEL", "SMOL", "RawClient", "events", "fixed_config"]

FIXED_MODEL = "test/fixed"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def fixed_config(db: str = ":memory:", **endpoint: Any) -> ServerConfig:
    """A server config with one model on the deterministic fixed backend."""
    return ServerConfig(
        port=0,
        db=db,
        keepalive_interval=15.0,
        models=[ModelConfig(name=FIXED_MODEL, endpoints=[FixedEndpoint(**endpoint)])],
    )


class RawClient:
    """Plain HTTP against a server, one session (cookie) per client, for status-code tests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        await self.http.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = {"Referer": self.url + "/", **kwargs.pop("headers", {})}
        async with self.http.request(method, self.url + path, headers=headers, allow_redirects=False, **kwargs) as r:
            body = await r.read()
        parsed: Any = body
        if r.content_type == "application/json":
            parsed = json.loads(body)
        return r.status, parsed, r

    async def accept(self, model: str = FIXED_MODEL) -> None:
        status, _, _ = await self.request(
            "POST", "/settings", data={"ethicsModalAccepted": "true", "activeModel": model}
        )
        assert status == 200

    async def create(self, model: str = FIXED_MODEL) -> str:
        status, body, _ = await self.request("POST", "/conversation", json={"model": model})
        assert status == 200, body
        return str(body["conversationId"])

    def message_body(self, inputs: str, **parameters: Any) -> dict[str, Any]:
        return {
            "inputs": inputs,
            "parameters": parameters,
            "stream": True,
            "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False},
        }

    async def message(
        self, conversation: str, inputs: str, **parameters: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        return await self.request("POST", f"/conversation/{conversation}", json=self.message_body(inputs, **parameters))


def events(raw: bytes) -> list[dict[str, Any]]:
    """The JSON events of a raw TGI stream (keep-alive comments dropped)."""
    return [json.loads(block[5:]) for block in raw.split(b"\n\n") if block.startswith(b"data:")]


async def append(store: Store, conversation: str, user_id: str, text: str, answer_id: str, **options: Any) -> None:
    """A question and its empty answer after the newest message, as the 2023 protocol appends to a
    conversation read as a list."""
    rows = await store.messages(conversation)
    parent = rows[-1].id if rows else "no-such-message"  # a deleted conversation: the store says so
    await store.begin_exchange(conversation, parent, (user_id, text), answer_id, **options)


def branch(conversation: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages of the branch shown, without the system root: a conversation as a 2023 client
    reads it (``GET /api/conversation/<id>`` lists the whole tree)."""
    by_id = {message["id"]: message for message in conversation["messages"]}
    leaf = by_id.get(conversation["activeMessageId"])
    if leaf is None or leaf["parentId"] is None:
        return []
    return [by_id[i] for i in leaf["ancestors"][1:]] + [leaf]
