"""The chat-ui 2023 endpoints (docs/protocol.md, "Endpoints"): settings, conversations, messages.

Every refusal raises :class:`ApiError`, which the app turns into a JSON 4xx
that says what was wrong. A conversation of another session is answered
exactly like a missing one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import msgspec
from aiohttp import web

from h2ochat.protocol.parameters import check_settings, request_parameters
from h2ochat.protocol.tgi import MessageOptions, MessageRequest
from h2ochat.server.config import ServerConfig
from h2ochat.server.edge.http import (
    CONFIG,
    MODELS,
    SESSION,
    SESSION_FOUND,
    STORE,
    ApiError,
    BadBody,
    decode_body,
    json_response,
    limit_rate,
    parse_json,
)
from h2ochat.server.edge.security import printable
from h2ochat.server.inference.backends import BackendError, InputTooLong, Overloaded
from h2ochat.server.inference.runtime import Fitted, ModelRuntime, Models
from h2ochat.server.inference.titles import summarize
from h2ochat.server.storage import Conversation, MessageRow, Store
from h2ochat.server.streaming import Answer, TgiEvents, admit, stream_answer

__all__ = ["routes"]

log = logging.getLogger("h2ochat.server")

routes = web.RouteTableDef()


class CreateConversation(msgspec.Struct, forbid_unknown_fields=True):
    model: str


class ConversationUpdate(msgspec.Struct, forbid_unknown_fields=True):
    title: str | None = None
    settings: Any = None  # checked by check_settings, whose errors say more than msgspec's would


def unknown_model(name: object, models: Models) -> ApiError:
    return ApiError(400, f"Unknown model {name!r}. Models served here: {', '.join(models.names)}")


async def owned(request: web.Request) -> Conversation:
    conversation = await request.app[STORE].conversation(request.match_info["id"], request[SESSION])
    if conversation is None:
        raise ApiError(404, "Conversation not found")
    return conversation


# chat-ui endpoints ----------------------------------------------------------------------------


@routes.post("/settings")
async def settings(request: web.Request) -> web.StreamResponse:
    if request.content_type == "application/json":
        form: Any = decode_body(await request.read(), dict)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await _read_form(request)
    else:
        raise ApiError(
            415, f"Send the settings as a form (application/x-www-form-urlencoded), not {request.content_type}"
        )
    model = form.get("activeModel") or None
    models = request.app[MODELS]
    if model is not None and (not isinstance(model, str) or model not in models.names):
        raise unknown_model(model, models)
    accepted = _truthy(form.get("ethicsModalAccepted"))
    share = _truthy(form.get("shareConversationsWithModelAuthors"))
    store = request.app[STORE]
    await store.save_settings(request[SESSION], model, share, accepted)
    found = request.get(SESSION_FOUND)
    if accepted and found is not None and found.ethics_accepted_at is None:
        # Accepting the welcome gate moves the session to a fresh id, so that one planted in the browser
        # before is worth nothing after. Only then: a page posts the settings again on every change of
        # model, and renewing each time would strand its requests already under way with the old id.
        request[SESSION] = await store.renew_session(request[SESSION])
    location = request.headers.get("Referer") or "/"
    if _prefers_html(request):
        return web.Response(status=303, headers={"Location": location})
    return json_response({"type": "redirect", "status": 303, "location": location})


@routes.post("/conversation")
async def create_conversation(request: web.Request) -> web.StreamResponse:
    models = request.app[MODELS]
    try:
        body = parse_json(await request.read(), CreateConversation)
    except BadBody as exc:
        raise ApiError(400, f'Send JSON {{"model": "<name>"}} ({exc}). Models: {", ".join(models.names)}') from None
    if body.model not in models.names:
        raise unknown_model(body.model, models)
    limit = request.app[CONFIG].max_conversations
    conversation_id = await request.app[STORE].create_conversation(request[SESSION], body.model, limit)
    return json_response({"conversationId": conversation_id})


@routes.post("/conversation/{id}")
async def post_message(request: web.Request) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG]
    conversation = await owned(request)
    body: MessageRequest = decode_body(await request.read(), MessageRequest)
    options = _options(body)
    runtime = _runtime(request, conversation)
    try:
        parameters = request_parameters(runtime.defaults, body.parameters, ceiling=config.max_new_tokens_limit)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if options.is_continue is True:
        return await _continue(request, runtime, conversation, options, parameters)
    inputs = body.inputs
    if not inputs.strip():
        raise ApiError(400, "inputs is empty: send the user's message in inputs")
    if len(inputs) > config.max_input_chars:
        raise ApiError(400, f"inputs is {len(inputs)} characters; this server accepts at most {config.max_input_chars}")
    store = app[STORE]
    history = await store.messages(conversation.id)
    replace_from = _retry_position(history, options.id, options.is_retry)
    if replace_from is not None:
        history = history[:replace_from]
    if options.response_id == options.id or any(m.id == options.response_id for m in history):
        raise ApiError(400, f"options.response_id {options.response_id} is already used; send a new UUID")
    await _count_message(request, runtime)
    messages = [{"role": m.role, "content": m.content} for m in history] + [{"role": "user", "content": inputs}]
    fitted = await _fit(runtime, messages, parameters)
    await store.begin_exchange(
        conversation.id, options.id, inputs, options.response_id, replace_from, left_out=fitted.left_out
    )
    return await _stream_answer(request, runtime, conversation, fitted, options.response_id, inputs)


async def _continue(
    request: web.Request, runtime: ModelRuntime, conversation: Conversation, options: MessageOptions, parameters: Any
) -> web.StreamResponse:
    """``is_continue``: the model goes on with the conversation's last answer, which grows in place."""
    store = request.app[STORE]
    history = await store.messages(conversation.id)
    last = history[-1] if history else None
    if last is None or last.id != options.id or last.role != "assistant":
        raise ApiError(
            400, f"options.id {options.id} is not this conversation's last answer; only that one can be continued"
        )
    if options.response_id != options.id:
        raise ApiError(400, "With is_continue, options.response_id must repeat options.id: the answer goes on in place")
    await _count_message(request, runtime)
    messages = [{"role": m.role, "content": m.content} for m in history[:-1]]
    fitted = await _fit(runtime, messages, parameters, prefix=last.content)
    if not await store.resume_answer(conversation.id, last.id):
        raise ApiError(409, "This answer is being generated already; wait for it to end, then continue it")
    return await _stream_answer(request, runtime, conversation, fitted, last.id, "", before=last)


def _options(body: MessageRequest) -> MessageOptions:
    options = body.options
    if options is None:
        raise ApiError(400, 'options is required: {"id": <uuid>, "response_id": <uuid>, "is_retry": false}')
    for name in ("id", "response_id"):
        if not _is_uuid(getattr(options, name)):
            raise ApiError(400, f"options.{name} must be a UUID, got {getattr(options, name)!r}")
    if options.is_retry and options.is_continue is True:
        raise ApiError(400, "options.is_retry and options.is_continue exclude each other: send one of them")
    return options


def _runtime(request: web.Request, conversation: Conversation) -> ModelRuntime:
    runtime = request.app[MODELS].get(conversation.model)
    if runtime is None:
        raise ApiError(
            410, f"The model {conversation.model!r} of this conversation is no longer served; start a new conversation"
        )
    return runtime


async def _count_message(request: web.Request, runtime: ModelRuntime) -> None:
    """Counted once the message is known to be acceptable; a full queue refuses before anything is stored."""
    per_minute = request.app[CONFIG].rate_limit_per_minute
    await limit_rate(
        request.app[STORE],
        f"messages:{request[SESSION]}",
        per_minute,
        f"messages: this server accepts {per_minute} per minute per session",
    )
    admit(runtime, TgiEvents())


async def _fit(runtime: ModelRuntime, messages: list[dict[str, str]], parameters: Any, prefix: str = "") -> Fitted:
    try:  # a message the model cannot take is refused before it is stored, too
        return await runtime.fit(messages, parameters, prefix)
    except InputTooLong as exc:
        raise ApiError(400, str(exc)) from None


async def _stream_answer(
    request: web.Request,
    runtime: ModelRuntime,
    conversation: Conversation,
    fitted: Fitted,
    answer_id: str,
    inputs: str,
    before: MessageRow | None = None,
) -> web.StreamResponse:
    """Stream and save the answer; ``before`` is the answer being continued, whose text and tokens it extends."""
    app = request.app
    store, config = app[STORE], app[CONFIG]
    started = time.monotonic()
    with app[MODELS].track(conversation.id) as generation:
        answer = Answer(runtime, fitted.request, generation)
        checkpoints = asyncio.ensure_future(
            _checkpoints(store, conversation.id, answer_id, answer, config.checkpoint_interval, before)
        )
        outcome = answer.outcome("client disconnected")  # unless the loop says otherwise
        try:
            # Beside the events, which are TGI's: how many earlier messages the model did not see.
            headers = {"H2ochat-Left-Out": str(fitted.left_out)}
            response, outcome = await stream_answer(request, answer, TgiEvents(inputs), headers)
        finally:
            checkpoints.cancel()
            # Shielded: an answer must be saved even if this handler is being cancelled.
            await asyncio.shield(
                store.finish_answer(
                    conversation.id,
                    answer_id,
                    _text(before) + outcome.text,
                    finish_reason=outcome.finish_reason,
                    interruption=outcome.interruption,
                    generated_tokens=_tokens(before) + outcome.generated_tokens,
                )
            )
    elapsed = time.monotonic() - started
    log.info(
        "generated model=%s tokens=%d seconds=%.2f tokens/s=%.1f end=%s",
        runtime.config.name,
        outcome.generated_tokens,
        elapsed,
        outcome.generated_tokens / elapsed if elapsed else 0.0,
        outcome.finish_reason or f"interrupted ({outcome.interruption})",
    )
    return response


async def _checkpoints(
    store: Store, conversation_id: str, answer_id: str, answer: Answer, every: float, before: MessageRow | None
) -> None:
    """Save the answer so far every ``every`` seconds, so that a crash loses at most that much of it."""
    saved = ""
    while True:
        await asyncio.sleep(every)
        if answer.text != saved:
            saved = answer.text
            await store.save_partial(conversation_id, answer_id, _text(before) + saved, _tokens(before) + answer.count)


def _text(before: MessageRow | None) -> str:
    return before.content if before is not None else ""


def _tokens(before: MessageRow | None) -> int:
    return (before.generated_tokens or 0) if before is not None else 0


@routes.delete("/conversation/{id}")
async def delete_conversation(request: web.Request) -> web.StreamResponse:
    conversation_id = request.match_info["id"]
    if not await request.app[STORE].delete_conversation(conversation_id, request[SESSION]):
        raise ApiError(404, "Conversation not found")
    await request.app[STORE].request_stop(conversation_id, "the conversation was deleted")
    return web.Response(status=200)


@routes.patch("/conversation/{id}")
async def update_conversation(request: web.Request) -> web.StreamResponse:
    """A new title, new settings, or both; everything is checked before anything is stored."""
    await owned(request)
    title, settings = _update(decode_body(await request.read(), ConversationUpdate), request.app[CONFIG])
    store, conversation_id, session = request.app[STORE], request.match_info["id"], request[SESSION]
    if title is not None:
        await store.rename_conversation(conversation_id, session, title)
    if settings is not None:
        await store.save_conversation_settings(conversation_id, session, settings)
    return web.Response(status=200)


def _update(body: ConversationUpdate, config: ServerConfig) -> tuple[str | None, dict[str, Any] | None]:
    """The title and the settings of a PATCH, checked; None for what it leaves as it is."""
    if body.title is None and body.settings is None:
        raise ApiError(
            400, 'Send {"title": "<text>"}, {"settings": {"temperature": 0.7, "max_new_tokens": 256}} or both'
        )
    title = body.title.strip() if body.title is not None else None
    if title is not None and not 1 <= len(title) <= 100:
        raise ApiError(400, f"title must be 1 to 100 characters, got {len(title)}")
    try:
        settings = None if body.settings is None else check_settings(body.settings, ceiling=config.max_new_tokens_limit)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return title, settings


@routes.post("/conversation/{id}/stop-generating")
async def stop_generating(request: web.Request) -> web.StreamResponse:
    conversation = await owned(request)
    # Through the store: the generation may run on another replica.
    await request.app[STORE].request_stop(conversation.id, "stop-generating was requested")
    return web.Response(status=200)


@routes.post("/conversation/{id}/summarize")
async def summarize_title(request: web.Request) -> web.StreamResponse:
    conversation = await owned(request)
    store = request.app[STORE]
    runtime = request.app[MODELS].get(conversation.model)
    if runtime is None:
        raise ApiError(410, f"The model {conversation.model!r} of this conversation is no longer served")
    first = next((m.content for m in await store.messages(conversation.id) if m.role == "user"), None)
    if first is None:
        raise ApiError(400, "The conversation has no message to summarize yet")
    try:
        title = await summarize(runtime, first)
    except Overloaded as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
    except BackendError as exc:
        log.warning("summarize of %s failed: %s", conversation.id, printable(str(exc)))
        raise ApiError(503, "The model could not write a title just now; try again later") from None
    # A title the person set while this one was being written stays, and is the answer.
    if not await store.rename_conversation(conversation.id, request[SESSION], title, only_if=conversation.title):
        title = (await owned(request)).title
    return json_response({"title": title})


# Helpers ----------------------------------------------------------------------------------------


async def _read_form(request: web.Request) -> Any:
    try:
        return await request.post()
    except web.HTTPException:
        raise  # too large: aiohttp's own refusal, worded by the app
    except Exception as exc:  # bad UTF-8, an unknown charset, a broken multipart body: the client's form
        raise ApiError(400, f"The form could not be read ({type(exc).__name__}: {exc})") from None


def _retry_position(history: list[MessageRow], message_id: str, is_retry: bool) -> int | None:
    """Where a retry cuts the history; a reused id without is_retry is refused."""
    for message in history:
        if message.id == message_id:
            if not is_retry:
                raise ApiError(
                    400,
                    f"options.id {message_id} is already a message of this conversation; "
                    "send a new id, or is_retry: true to replace it",
                )
            if message.role != "user":
                raise ApiError(400, f"options.id {message_id} is not a user message; only those can be retried")
            return message.position
    if is_retry:
        raise ApiError(400, f"options.id {message_id} is not a message of this conversation, so it cannot be retried")
    return None


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "on", "1", "yes"))


def _prefers_html(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    html, json = accept.find("text/html"), accept.find("application/json")
    return html >= 0 and (json < 0 or html < json)
