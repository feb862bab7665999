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

import contextlib
import dataclasses
import uuid
from typing import Any

import msgspec
from aiohttp import web

from h2ochat.protocol.tgi import Token
from h2ochat.server.backends import BackendError, GenerationRequest
from h2ochat.server.generation import Generation, ModelRuntime, build_request
from h2ochat.server.parameters import request_parameters
from h2ochat.server.routes import CONFIG, MODELS, ApiError, BadBody, json_response, parse_json
from h2ochat.server.streaming import Answer, EventWriter, Interrupted, relay

__all__ = ["routes", "tgi_runtime"]

routes = web.RouteTableDef()

_STATUSES = {"validation": 422, "generation": 424, "overloaded": 429, "incomplete_generation": 500}


class GenerateRequest(msgspec.Struct):
    inputs: str
    parameters: dict[str, Any] | None = None
    stream: bool = False


def tgi_error(error: str, error_type: str) -> ApiError:
    return ApiError(_STATUSES.get(error_type, 500), error, body={"error": error, "error_type": error_type})


def tgi_runtime(request: web.Request) -> ModelRuntime:
    config = request.app[CONFIG]
    models = request.app[MODELS]
    runtime = models.get(config.tgi_model or models.names[0])
    if runtime is None:
        raise tgi_error("the model of the TGI API is not loaded", "overloaded")
    return runtime


@routes.post("/generate")
async def generate(request: web.Request) -> web.StreamResponse:
    body, runtime, generation_request = await _read(request)
    return await _answer(request, body, runtime, generation_request, stream=False)


@routes.post("/generate_stream")
async def generate_stream(request: web.Request) -> web.StreamResponse:
    body, runtime, generation_request = await _read(request)
    return await _answer(request, body, runtime, generation_request, stream=True)


@routes.post("/")
async def compat_generate(request: web.Request) -> web.StreamResponse:
    """TGI's root route: ``stream`` picks the stream, and a whole answer comes in a list."""
    body, runtime, generation_request = await _read(request)
    return await _answer(request, body, runtime, generation_request, stream=body.stream, listed=True)


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


async def _answer(
    request: web.Request,
    body: GenerateRequest,
    runtime: ModelRuntime,
    generation_request: GenerationRequest,
    *,
    stream: bool,
    listed: bool = False,
) -> web.StreamResponse:
    with request.app[MODELS].track(f"tgi-{uuid.uuid4().hex}") as generation:
        if stream:
            return await _stream(request, runtime, generation_request, generation, body.inputs)
        result = await _complete(Answer(runtime, generation_request, generation), body.inputs)
        return json_response([result] if listed else result)


async def _stream(
    request: web.Request,
    runtime: ModelRuntime,
    generation_request: GenerationRequest,
    generation: Generation,
    inputs: str,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    try:
        await response.prepare(request)
    except ConnectionError:
        return response
    writer = EventWriter(response, request.app[CONFIG].keepalive_interval, generation)
    await relay(writer, Answer(runtime, generation_request, generation), prefix=inputs)
    return response


async def _complete(answer: Answer, inputs: str) -> dict[str, Any]:
    tokens: list[Token] = []
    try:
        async with contextlib.aclosing(answer.tokens()) as stream:
            async for item in stream:
                tokens.append(Token(item.id, item.text, item.logprob, item.special))
    except BackendError as exc:
        raise tgi_error(str(exc), exc.error_type) from None
    except Interrupted as exc:
        raise tgi_error(f"generation stopped: {exc}", "incomplete_generation") from None
    parameters = answer.request.parameters
    result: dict[str, Any] = {"generated_text": inputs + answer.text if parameters.return_full_text else answer.text}
    if parameters.details:
        result["details"] = {
            "finish_reason": answer.finish_reason,
            "generated_tokens": answer.count,
            "seed": answer.seed,
            "prefill": [],
            "tokens": tokens,
        }
    return result
