"""A small chat-ui double for client tests: the 2023 behaviours plus injectable faults.

It reproduces what docs/protocol.md says chat-ui did (cookie, Referer and welcome
gates, both settings answers, 404 for a foreign conversation) and records
every conversation created and deleted, so tests can prove none leaked.
Faults are queued per step and used once each, in order.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from h2ochat.protocol.tgi import Details, Token, encode_stream_event

Fault = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "hf-chat"
SESSION = web.RequestKey("session", str)
CUT = object()  # in a reply script: drop the connection here
STALL = object()  # in a reply script: stop sending, keep the connection open


def token_event(text: str, *, final: str | None = None, special: bool = False, details: bool = False) -> bytes:
    detail = Details("eos_token" if special else "length", 2, None) if details and final is not None else None
    return encode_stream_event(Token(id=7, text=text, logprob=-0.5, special=special), final, detail)


def answer(*texts: str, details: bool = False) -> list[Any]:
    """A normal reply: one event per text, then an EOS event carrying the whole text."""
    events: list[Any] = [token_event(text) for text in texts]
    events.append(token_event("</s>", final="".join(texts), special=True, details=details))
    return events


@dataclass
class ChatUIDouble:
    welcome_gate: bool = True
    settings_as_html: bool = False  # answer the settings step with 303 instead of JSON
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # message POST bodies
    settings_posts: int = 0
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    faults: dict[str, deque[Fault]] = field(default_factory=dict)
    replies: deque[list[Any]] = field(default_factory=deque)
    owners: dict[str, str] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)

    # Scripting -------------------------------------------------------------------------

    def fail(self, step: str, fault: Fault) -> None:
        """Queue a fault for the next request of ``step`` (settings, conversation, message, delete)."""
        self.faults.setdefault(step, deque()).append(fault)

    def fail_status(
        self,
        step: str,
        status: int,
        body: str = "",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        async def respond(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, text=body, content_type=content_type, headers=headers)

        self.fail(step, respond)

    def reply(self, script: list[Any]) -> None:
        """Queue the next message answer: bytes are written, numbers sleep, CUT and STALL as named."""
        self.replies.append(script)

    @property
    def leaked(self) -> set[str]:
        return set(self.created) - set(self.deleted)

    # The app ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._session])
        app.router.add_post("/settings", self._settings)
        app.router.add_post("/conversation", self._create)
        app.router.add_post("/conversation/{id}", self._message)
        app.router.add_delete("/conversation/{id}", self._delete)
        return app

    @web.middleware
    async def _session(self, request: web.Request, handler: Any) -> web.StreamResponse:
        session = request.cookies.get(COOKIE) or str(uuid.uuid4())
        request[SESSION] = session
        self.requests.append((request.method, request.path, dict(request.headers)))
        step = _step(request)
        queue = self.faults.get(step)
        if queue:
            response = await queue.popleft()(request)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain") and (
            not request.headers.get("Referer", "").startswith(f"{request.scheme}://{request.host}")
        ):
            response = web.json_response({"message": "Invalid referer for POST request"}, status=403)
        elif self.welcome_gate and request.path != "/settings" and session not in self.accepted:
            response = web.json_response({"error": "You need to accept the welcome modal first"}, status=405)
        else:
            response = await handler(request)
        if not response.prepared:
            response.set_cookie(COOKIE, session, path="/", httponly=True, samesite="Lax")
        return response

    async def _settings(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        self.settings_posts += 1
        if form.get("ethicsModalAccepted"):
            self.accepted.add(request[SESSION])
        referer = request.headers.get("Referer", "/")
        if self.settings_as_html:
            return web.Response(status=303, headers={"Location": referer})
        return web.json_response({"type": "redirect", "status": 303, "location": referer})

    async def _create(self, request: web.Request) -> web.StreamResponse:
        conversation = secrets.token_hex(12)
        self.created.append(conversation)
        self.owners[conversation] = request[SESSION]
        return web.json_response({"conversationId": conversation})

    async def _message(self, request: web.Request) -> web.StreamResponse:
        conversation = request.match_info["id"]
        if self.owners.get(conversation) != request[SESSION] or conversation in self.deleted:
            return web.json_response({"message": "Conversation not found"}, status=404)
        self.bodies.append(json.loads(await request.read()))
        script = self.replies.popleft() if self.replies else answer("Hello", " world")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.set_cookie(COOKIE, request[SESSION], path="/", httponly=True, samesite="Lax")
        await response.prepare(request)
        for step in script:
            if step is CUT:
                assert request.transport is not None
                request.transport.abort()
                return response
            if step is STALL:
                await asyncio.sleep(3600)
            elif isinstance(step, (int, float)):
                await asyncio.sleep(step)
            else:
                await response.write(step)
        await response.write_eof()
        return response

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        conversation = request.match_info["id"]
        if self.owners.get(conversation) != request[SESSION] or conversation in self.deleted:
            return web.json_response({"message": "Conversation not found"}, status=404)
        self.deleted.append(conversation)
        return web.Response(status=200)


def _step(request: web.Request) -> str:
    if request.path.startswith("/api/"):
        return "probe"  # GET /api/v2/models, which a chat-ui of 2023 does not have: 404
    if request.path == "/settings":
        return "settings"
    if request.path == "/conversation":
        return "conversation"
    return "delete" if request.method == "DELETE" else "message"
