"""The text-generation-inference API: ``POST /generate``, ``POST /generate_stream`` and ``POST /``.

Bodies are TGI's, ``{"inputs", "parameters", "stream"}``, for one model:
``ServerConfig.tgi_model``, or the first one. With chat-ui tokens ``inputs``
is the raw prompt, as TGI takes it; with the model's own template it is one
user message. Answers are TGI's too: ``/generate`` gives ``{"generated_text",
"details"}`` (details when asked), ``/`` the same in a list (the Inference
API's shape, which HuggingFace's ``text_generation`` client reads), and
``/generate_stream`` TGI events. A refusal is ``{"error", "error_type"}``
with TGI's status: 422 validation, 424 generation, 429 overloaded, 500
incomplete_generation. Nothing is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import msgspec
from aiohttp import web

from h2ochat.protocol.parameters import request_parameters
from h2ochat.server.edge.http import CONFIG, MODELS, BadBody, json_response, parse_json
from h2ochat.server.edge.metrics import METRICS
from h2ochat.server.edge.quotas import record_request
from h2ochat.server.inference.backends import GenerationRequest
from h2ochat.server.inference.runtime import ModelRuntime, build_request
from h2ochat.server.streaming import Answer, TgiEvents, admit, complete_answer, stream_answer, tgi_error, within_quota

__all__ = ["routes", "tgi_runtime"]

routes = web.RouteTableDef()


class GenerateRequest(msgspec.Struct):
    inputs: str
    parameters: dict[str, Any] | None = None
    stream: bool = False


def tgi_runtime(request: web.Request) -> ModelRuntime:
    config = request.app[CONFIG]
    models = request.app[MODELS]
    runtime = models.get(config.tgi_model or models.names[0])
    if runtime is None:
        raise tgi_error("the model of the TGI API is not loaded", "overloaded")
    return runtime


@routes.post("/generate")
async def generate(request: web.Request) -> web.StreamResponse:
    return await _answer(request, stream=False)


@routes.post("/generate_stream")
async def generate_stream(request: web.Request) -> web.StreamResponse:
    return await _answer(request, stream=True)


@routes.post("/")
async def compat_generate(request: web.Request) -> web.StreamResponse:
    """TGI's root route: ``stream`` picks the stream, and a whole answer comes in a list."""
    return await _answer(request, stream=None, listed=True)


async def _read(request: web.Request) -> tuple[GenerateRequest, ModelRuntime, GenerationRequest]:
    config = request.app[CONFIG]
    try:
        body = parse_json(await request.read(), GenerateRequest)
    except BadBody as exc:
        raise tgi_error(str(exc), "validation") from None
    if not body.inputs.strip():
        raise tgi_error("`inputs` cannot be empty", "validation")
    if len(body.inputs) > config.max_input_chars:
        raise tgi_error(
            f"`inputs` is {len(body.inputs)} characters; this server accepts at most {config.max_input_chars}",
            "validation",
        )
    runtime = tgi_runtime(request)
    try:
        parameters = request_parameters(runtime.defaults, body.parameters, ceiling=config.max_new_tokens_limit)
    except ValueError as exc:
        raise tgi_error(str(exc), "validation") from None
    generation_request = build_request(runtime.config, [{"role": "user", "content": body.inputs}], parameters)
    if runtime.config.uses_chatui_tokens:
        generation_request = dataclasses.replace(generation_request, prompt=body.inputs)
    return body, runtime, generation_request


async def _answer(request: web.Request, *, stream: bool | None, listed: bool = False) -> web.StreamResponse:
    """``stream`` None: as the body says."""
    body, runtime, generation_request = await _read(request)
    dialect = TgiEvents(prefix=body.inputs)
    await within_quota(request, dialect)
    admit(runtime, dialect)
    with request.app[MODELS].track(f"tgi-{uuid.uuid4().hex}") as generation:
        answer = Answer(runtime, generation_request, generation, request.app.get(METRICS))
        try:
            if body.stream if stream is None else stream:
                response, _ = await stream_answer(request, answer, dialect)
                return response
            result = await complete_answer(answer, dialect)
            return json_response([result] if listed else result)
        finally:
            await asyncio.shield(record_request(request, answer.count))
