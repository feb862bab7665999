"""Another session guessing conversation ids: it must read nothing, delete nothing, learn nothing.

Alice owns a few conversations; Mallory, a session of her own past the
welcome gate, throws ids at every endpoint that takes one: random 24-hex
ids, junk, and (the worst case, an id that leaked) Alice's real ones. Every
answer must be exactly the "not found" answer a missing conversation gets,
and Alice's conversations must be byte-for-byte the same afterwards.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from reliability.badinput import MODEL, message_body

__all__ = ["GuessResult", "guess_ids"]

NOT_FOUND = (404, {"message": "Conversation not found"})
# Non-GET requests from a session that never accepted the welcome modal meet the gate first (405);
# that answer does not depend on the id either.
GATED = (405, {"error": "You need to accept the welcome modal first"})
_ANY_MESSAGE = "5b0c6c8e-2f4e-4c8f-9d7a-3a1f2e4b6c10"
_ENDPOINTS = [
    ("GET", "/api/conversation/{id}", None),
    ("DELETE", "/conversation/{id}", None),
    ("PATCH", "/conversation/{id}", {"title": "mine now"}),
    ("POST", "/conversation/{id}", "message"),
    ("POST", "/conversation/{id}/stop-generating", None),
    ("POST", "/conversation/{id}/summarize", None),
    # The tree's routes: a guessed conversation with any message id is still no conversation.
    ("PATCH", "/conversation/{id}", {"preprompt": "mine now", "activeMessageId": _ANY_MESSAGE}),
    ("DELETE", "/conversation/{id}/message/" + _ANY_MESSAGE, None),
    ("POST", "/conversation/{id}/message/" + _ANY_MESSAGE + "/vote", {"score": 1}),
]


@dataclass
class GuessResult:
    attempts: int = 0
    real_ids_tried: int = 0
    reads: int = 0  # a 2xx to a GET
    deletes: int = 0  # a 2xx to a DELETE
    other_successes: int = 0  # any other 2xx
    distinguishable: int = 0  # an answer other than the plain "not found" (or the gate)
    intact: bool = True  # Alice's conversations unchanged
    examples: list[str] = field(default_factory=list)


class _Session:
    def __init__(self, url: str, cookie: str | None = None) -> None:
        self.url = url
        self.cookie = cookie
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Referer": self.url + "/"}
        if self.cookie is not None:
            headers["Cookie"] = self.cookie
        async with self.http.request(method, self.url + path, json=body, headers=headers) as response:
            raw = await response.read()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw

    async def accept(self) -> None:
        form = {"ethicsModalAccepted": "true", "activeModel": MODEL}
        async with self.http.post(f"{self.url}/settings", data=form, headers={"Referer": self.url + "/"}) as r:
            assert r.status == 200, await r.text()

    async def close(self) -> None:
        await self.http.close()


async def guess_ids(url: str, attempts: int, seed: int, conversations: int = 3) -> GuessResult:
    rng = random.Random(seed)
    alice, mallory = _Session(url), _Session(url)
    try:
        await alice.accept()
        await mallory.accept()
        owned = [await _conversation_with_a_message(alice, f"secret #{i}") for i in range(conversations)]
        before = [await alice.call("GET", f"/api/conversation/{c}") for c in owned]
        result = GuessResult()
        for _ in range(attempts):
            await _one_guess(rng, url, mallory, owned, result)
        after = [await alice.call("GET", f"/api/conversation/{c}") for c in owned]
        result.intact = before == after and all(status == 200 for status, _ in after)
        return result
    finally:
        await alice.close()
        await mallory.close()


async def _conversation_with_a_message(session: _Session, text: str) -> str:
    status, body = await session.call("POST", "/conversation", {"model": MODEL})
    assert status == 200, body
    conversation = str(body["conversationId"])
    status, _ = await session.call("POST", f"/conversation/{conversation}", message_body(text))
    assert status == 200
    return conversation


async def _one_guess(rng: random.Random, url: str, mallory: _Session, owned: list[str], result: GuessResult) -> None:
    roll = rng.random()
    if roll < 0.2:
        guess = rng.choice(owned)  # the id leaked: ownership alone must protect it
        result.real_ids_tried += 1
    elif roll < 0.9:
        guess = "".join(rng.choice("0123456789abcdef") for _ in range(24))
    else:
        guess = rng.choice([owned[0][:-1] + "0", owned[0].upper(), owned[0] + " ", "%20" + owned[0]])
    method, template, body = rng.choice(_ENDPOINTS)
    if body == "message":
        body = message_body("let me in")
    forged = rng.random() < 0.1  # a made-up session cookie instead of Mallory's own
    session = _Session(url, f"hf-chat={uuid.uuid4()}") if forged else mallory
    try:
        status, answer = await session.call(method, template.format(id=guess), body)
    finally:
        if forged:
            await session.close()
    result.attempts += 1
    if 200 <= status < 300:
        if method == "GET":
            result.reads += 1
        elif method == "DELETE":
            result.deletes += 1
        else:
            result.other_successes += 1
    if (status, answer) not in (NOT_FOUND, GATED):
        result.distinguishable += 1
        if len(result.examples) < 5:
            result.examples.append(f"{method} {template.format(id=guess)} -> {status} {str(answer)[:100]}")
