"""The OpenAI-compatible API: ``GET /v1/models`` and ``POST /v1/chat/completions``, streamed or not.

The messages reach the model the way the chat endpoint's do (``build_request``,
``ModelRuntime.generate``, the same :class:`Answer` loop); nothing is stored.
The options map to TGI parameters as :mod:`h2ochat.protocol.openai` says, and
the answer leaves out its stop sequence, as OpenAI's does.

With ``ServerConfig.api_key`` set, every ``/v1`` request needs
``Authorization: Bearer <key>``. Errors have OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``; once a stream has begun,
an error is its last event, in the same shape (the openai SDK raises it).
"""

from __future__ import annotations

import asyncio
import hmac
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from h2ochat.protocol.openai import (
    OPTIONS,
    ChatCompletionChunk,
    CompletionBuilder,
    error_body,
    tgi_parameters,
)
from h2ochat.protocol.parameters import request_parameters
from h2ochat.server.edge.http import (
    API_KEY_ID,
    CONFIG,
    MODELS,
    ApiError,
    BadBody,
    describe_http_error,
    json_response,
    parse_json,
    route_path,
)
from h2ochat.server.edge.metrics import METRICS
from h2ochat.server.edge.quotas import record_request
from h2ochat.server.inference.backends import GeneratedToken, GenerationRequest
from h2ochat.server.inference.runtime import ModelRuntime, build_request
from h2ochat.server.streaming import Answer, admit, complete_answer, stream_answer, within_quota

__all__ = ["routes", "v1_guard"]

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# A generation error as an HTTP status, for answers that are not streamed.
_STATUSES = {"validation": 400, "overloaded": 429, "generation": 500, "incomplete_generation": 500}
_DONE = b"data: [DONE]\n\n"
_PARAM = re.compile(r"at `\$\.(\w+)")
_encoder = msgspec.json.Encoder()


def openai_error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return ApiError(status, message, body=error_body(message, kind, param, code))


@web.middleware
async def v1_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The API key, and OpenAI's error shape for aiohttp's own refusals, on ``/v1`` paths only."""
    path = route_path(request)
    if not (path == "/v1" or path.startswith("/v1/")):
        return await handler(request)
    key = request.app[CONFIG].api_key
    if key and API_KEY_ID not in request:  # empty: no key; a person's own key (edge/people.py) opens /v1 too
        sent = request.headers.get("Authorization", "")
        # compare_digest: the time taken must not tell how much of a guess was right.
        # surrogateescape: a header byte that is not UTF-8 (0xFF) must be a wrong key, not a 500.
        if not hmac.compare_digest(sent.encode("utf-8", "surrogateescape"), f"Bearer {key}".encode()):
            what = "No API key provided" if not sent else "Incorrect API key provided"
            raise openai_error(401, f"{what}: send the header 'Authorization: Bearer <key>'", code="invalid_api_key")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = openai_error(exc.status, describe_http_error(exc, request))
        if "Allow" in exc.headers:
            error.headers = {"Allow": exc.headers["Allow"]}
        raise error from None


# Requests -----------------------------------------------------------------------------------------


class _Part(msgspec.Struct):
    type: str
    text: str | None = None


class _Message(msgspec.Struct):
    role: str
    content: str | list[_Part] | None = None


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class CompletionRequest(msgspec.Struct, kw_only=True):
    """The body of ``POST /v1/chat/completions``; fields this server does not use are ignored."""

    model: str
    messages: list[_Message]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    n: int | None = None


def _decode(raw: bytes) -> CompletionRequest:
    try:
        return parse_json(raw, CompletionRequest)
    except BadBody as exc:
        match = _PARAM.search(str(exc))
        raise openai_error(400, str(exc), param=match.group(1) if match else None) from None


def _messages(body: CompletionRequest, limit: int) -> list[dict[str, str]]:
    if not body.messages:
        raise openai_error(400, "messages is empty: send at least one message", param="messages")
    messages = []
    for index, message in enumerate(body.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise openai_error(
                400, f"messages[{index}].role {message.role!r} is not supported; use system, user or assistant"
            )
        messages.append({"role": role, "content": _text(message.content, index)})
    size = sum(len(message["content"]) for message in messages)
    if size > limit:
        raise openai_error(400, f"the messages hold {size} characters; this server accepts at most {limit}")
    return messages


def _text(content: str | list[_Part] | None, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if any(part.type != "text" or part.text is None for part in content):
        raise openai_error(400, f"messages[{index}].content: only text parts are supported", param="messages")
    return "\n".join(part.text or "" for part in content)


def _request(body: CompletionRequest, runtime: ModelRuntime, request: web.Request) -> GenerationRequest:
    config = request.app[CONFIG]
    messages = _messages(body, config.max_input_chars)
    try:
        raw = tgi_parameters({name: getattr(body, name) for name in OPTIONS})
        parameters = request_parameters(runtime.defaults, raw, ceiling=config.max_new_tokens_limit)
    except ValueError as exc:
        raise openai_error(400, str(exc)) from None
    return build_request(runtime.config, messages, parameters)


# Endpoints ----------------------------------------------------------------------------------------


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.StreamResponse:
    return json_response({"object": "list", "data": [_model(name) for name in request.app[MODELS].runtimes]})


@routes.get("/v1/models/{model:.+}")
async def get_model(request: web.Request) -> web.StreamResponse:
    name = request.match_info["model"]
    if request.app[MODELS].get(name) is None:
        raise _unknown_model(name)
    return json_response(_model(name))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "h2ochat"}


def _unknown_model(name: str) -> ApiError:
    return openai_error(404, f"The model {name!r} does not exist", param="model", code="model_not_found")


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = _decode(await request.read())
    models = request.app[MODELS]
    runtime = models.get(body.model)
    if runtime is None:
        raise _unknown_model(body.model)
    generation_request = _request(body, runtime, request)
    usage = body.stream_options is not None and body.stream_options.include_usage
    dialect = OpenAIChunks(CompletionBuilder(body.model, include_usage=usage))
    await within_quota(request, dialect)
    admit(runtime, dialect)
    with models.track(f"openai-{uuid.uuid4().hex}") as generation:
        answer = Answer(runtime, generation_request, generation, request.app.get(METRICS))
        try:
            if body.stream:
                response, _ = await stream_answer(request, answer, dialect)
                return response
            return json_response(await complete_answer(answer, dialect))
        finally:
            await asyncio.shield(record_request(request, answer.count))


def _event(data: ChatCompletionChunk | dict[str, Any]) -> bytes:
    return b"data: " + _encoder.encode(data) + b"\n\n"


class OpenAIChunks:
    """OpenAI's chunks: the role first, then the content without stop sequences, the finish, [DONE].

    The answer has already cut its stop sequences (``Answer.piece``), so the
    builder is given none.
    """

    def __init__(self, builder: CompletionBuilder) -> None:
        self.builder = builder

    def start(self, answer: Answer) -> bytes:
        return _event(self.builder.start())

    def token(self, answer: Answer, token: GeneratedToken) -> bytes:
        chunk = self.builder.add(answer.piece)
        return _event(chunk) if chunk else b""

    def end(self, answer: Answer, token: GeneratedToken) -> bytes:
        head = self.token(answer, token)
        return head + b"".join(map(_event, self._finish(answer))) + _DONE

    def error(self, message: str, error_type: str) -> bytes:
        return _event(error_body(message, "server_error", code=error_type))

    def refusal(self, message: str, error_type: str, interrupted: bool) -> ApiError:
        status = 503 if interrupted else _STATUSES.get(error_type, 500)
        return openai_error(status, message, code=error_type)

    def result(self, answer: Answer, tokens: list[GeneratedToken]) -> Any:
        self.builder.add(answer.released)
        self._finish(answer)
        return self.builder.result()

    def _finish(self, answer: Answer) -> list[ChatCompletionChunk]:
        # 0 prompt tokens: the backend does not know them.
        return self.builder.finish(answer.finish_reason, answer.prompt_tokens or 0, answer.count)
