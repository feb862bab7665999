"""The comparison client: the four steps the way the original gpt4free ``H2o`` provider took them.

A fresh aiohttp ``ClientSession`` per call, the steps one after the other,
and the answer read with ``async for line in response.content`` (aiohttp
splits on LF), ``startswith(b"data:")``, ``json.loads`` and dict look-ups.
It keeps the original's weaknesses on purpose; the benchmarks show what
they cost.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

__all__ = ["naive_stream"]


async def naive_stream(url: str, model: str, prompt: str, **parameters: Any) -> AsyncIterator[str]:
    """Yield the token texts of one answer, as the original provider did."""
    async with aiohttp.ClientSession(headers={"Referer": url + "/"}) as session:
        form = {
            "ethicsModalAccepted": "true",
            "shareConversationsWithModelAuthors": "true",
            "ethicsModalAcceptedAt": "",
            "activeModel": model,
            "searchEnabled": "true",
        }
        async with session.post(f"{url}/settings", data=form) as response:
            response.raise_for_status()
        async with session.post(f"{url}/conversation", json={"model": model}) as response:
            response.raise_for_status()
            conversation = (await response.json())["conversationId"]
        body = {
            "inputs": prompt,
            "parameters": {
                "temperature": 0.4,
                "truncate": 2048,
                "max_new_tokens": 1024,
                "do_sample": True,
                "repetition_penalty": 1.2,
                "return_full_text": False,
                **parameters,
            },
            "stream": True,
            "options": {
                "id": str(uuid.uuid4()),
                "response_id": str(uuid.uuid4()),
                "is_retry": False,
                "use_cache": False,
                "web_search_id": "",
            },
        }
        async with session.post(f"{url}/conversation/{conversation}", json=body) as response:
            async for line in response.content:
                if line and line.startswith(b"data:"):
                    event = json.loads(line[5:-1])
                    if not event["token"]["special"]:
                        yield event["token"]["text"]
        async with session.delete(f"{url}/conversation/{conversation}") as response:
            response.raise_for_status()
