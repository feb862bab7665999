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
