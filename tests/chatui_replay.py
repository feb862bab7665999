"""A current chat-ui server played back from the recorded exchange (tests/data/chatui-current/).

The create answer, the conversation reads and the message's answer are the bytes
chat-ui 0.20.0 sent, written chunk by chunk as it wrote them (NUL padding,
keep-alives and the 4096 spaces included), with its ``hf-chat`` cookie. Four
answers were not recorded and are written here from CHATUI-CURRENT.md: the
models list (``GET /api/v2/models``, the generation probe), the stop
(``POST …/stop-generating``, empty 200), the v2 delete (``{"json":{"success":true}}``)
and the refusals. The rules chat-ui applies and the recording depends on are
checked: a multipart post needs an ``Origin`` of this host and a ``data`` part
that names the recorded root as parent; later requests need the cookie.

Each request is kept in ``requests`` (method, path, headers, body); ``faults``
answers a step (``probe``, ``create``, ``message``, ``stop``, ``delete``) once,
in place of the recording; ``script`` replaces the message answer's chunks.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.chatui_recording import request as recorded_request
from tests.chatui_recording import response as recorded_response

Fault = Callable[[web.Request], Awaitable[web.StreamResponse]]
CONVERSATION = "6b12cac1c4f4d7fe466ca041"
ROOT = "8413e7ed-5bd2-4bb1-a00a-fa45488fbf70"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
ANSWER = "The capital of France is Paris."
ANSWER_ID = "52e12455-19fa-4340-aea5-54510a9c19bf"  # in the read after the answer
MODELS = {"json": [{"id": MODEL, "name": MODEL, "displayName": MODEL, "multimodal": False, "unlisted": False}]}


def _cookie() -> str:
    head = recorded_response("1-create").head.decode()
    line = next(line for line in head.split("\r\n") if line.lower().startswith("set-cookie:"))
    return line.split(":", 1)[1].strip().split(";", 1)[0].split("=", 1)[1]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)


@dataclass
class ChatUIReplay:
    requests: list[Seen] = field(default_factory=list)
    faults: dict[str, deque[Fault]] = field(default_factory=dict)
    script: list[bytes] | None = None  # the message answer's chunks, instead of the recorded ones
    answered: bool = False  # whether the message was answered: the conversation read gives the later tree
    cookie: str = field(default_factory=_cookie)
    base: str = ""  # APP_BASE: every route under it ("/chat" on HuggingChat)
    # PUBLIC_ORIGIN: an Origin the CSRF rule accepts besides the request's own (HuggingChat's, for hugchat)
    public_origin: str | None = None

    def fail(self, step: str, status: int, body: str, content_type: str = "application/json") -> None:
        async def respond(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, text=body, content_type=content_type)

        self.faults.setdefault(step, deque()).append(respond)

    def paths(self) -> list[tuple[str, str]]:
        return [(seen.method, seen.path) for seen in self.requests]

    def app(self) -> web.Application:
        app = self._routes()
        if not self.base:
            return app
        outer = web.Application()
        outer.add_subapp(self.base, app)
        return outer

    def _routes(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/api/v2/models", self._models)
        app.router.add_post("/conversation", self._create)
        app.router.add_get("/api/v2/conversations/{id}", self._read)
        app.router.add_post("/conversation/{id}", self._message)
        app.router.add_post("/conversation/{id}/stop-generating", self._stop)
        app.router.add_delete("/api/v2/conversations/{id}", self._delete)
        app.router.add_post("/conversation/{id}/share", self._share)
        app.router.add_post("/settings", self._settings)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path.removeprefix(self.base)
        seen = Seen(request.method, path, dict(request.headers), b"")
        self.requests.append(seen)
        if request.content_type == "multipart/form-data":
            seen.form = {name: str(value) for name, value in (await request.post()).items()}
        else:
            seen.body = await request.read()
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded", "text/plain"):
            origin = request.headers.get("Origin")
            if origin not in (f"{request.scheme}://{request.host}", self.public_origin):
                return web.Response(status=403, text="Non-JSON form requests need to have an origin")
        queue = self.faults.get(_step(request.method, path))
        if queue:
            return await queue.popleft()(request)
        needs_cookie = path != "/api/v2/models" and (request.method, path) not in (
            ("POST", "/conversation"),
            ("POST", "/settings"),
        )
        if needs_cookie and request.cookies.get("hf-chat") != self.cookie:
            return web.json_response({"message": "Conversation not found"}, status=404)
        return await handler(request)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(MODELS)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        if json.loads(self.requests[-1].body or b"{}").get("model") != MODEL:
            return web.json_response({"message": "Invalid model"}, status=400)
        return _recorded("1-create", self.cookie)

    async def _read(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["id"] != CONVERSATION:
            return web.json_response({"message": "Conversation not found"}, status=404)
        return _recorded("3b-get-after" if self.answered else "2-get")

    async def _message(self, request: web.Request) -> web.StreamResponse:
        data = json.loads(self.requests[-1].form.get("data", "null") or "null")
        if request.match_info["id"] != CONVERSATION:
            return web.json_response({"message": "Conversation not found"}, status=404)
        # The recorded root, or (a second turn) the recorded answer that the later read shows.
        if not isinstance(data, dict) or data.get("id") not in (ROOT, ANSWER_ID) or not data.get("inputs"):
            return web.json_response({"message": "An error occurred", "errorId": "0f6c1a52"}, status=500)
        response = web.StreamResponse(headers={"Content-Type": "application/jsonl"})
        response.set_cookie("hf-chat", self.cookie, path="/", httponly=True, samesite="Lax")
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.answered = True
        for chunk in self.script if self.script is not None else recorded_response("3-message").chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["id"] != CONVERSATION:
            return web.json_response({"message": "Conversation not found"}, status=404)
        return web.json_response({"json": {"success": True}})

    async def _share(self, request: web.Request) -> web.StreamResponse:
        # Not recorded; CHATUI-CURRENT.md section 11: a 7-character share id (since 2025-06; {url} before).
        if request.match_info["id"] != CONVERSATION:
            return web.json_response({"message": "Conversation not found"}, status=404)
        return web.json_response({"shareId": "aB3dE5f"})

    async def _settings(self, request: web.Request) -> web.StreamResponse:
        # Not recorded; CHATUI-CURRENT.md section 3: the body is parsed as JSON whatever its type, so a
        # form fails in request.json() and surfaces as chat-ui's uncaught-error answer.
        try:
            json.loads(self.requests[-1].body)
        except ValueError:
            return web.json_response({"message": "An error occurred", "errorId": "5d0c7e21"}, status=500)
        return web.Response(status=200)


def _recorded(name: str, cookie: str | None = None) -> web.Response:
    response = web.Response(body=recorded_response(name).body, content_type="application/json")
    if cookie is not None:
        response.set_cookie("hf-chat", cookie, path="/", httponly=True, samesite="Lax")
    return response


def _step(method: str, path: str) -> str:
    if path.endswith("/stop-generating"):
        return "stop"
    if path == "/api/v2/models":
        return "probe"
    if path == "/conversation":
        return "create"
    if method == "DELETE":
        return "delete"
    return "message" if method == "POST" else "read"


def recorded_data_part() -> dict[str, Any]:
    """The ``data`` part chat-ui's recorded client sent (inputs and parent)."""
    body = recorded_request("3-message").body.decode()
    return dict(json.loads(body.split("\r\n\r\n", 1)[1].split("\r\n", 1)[0]))
