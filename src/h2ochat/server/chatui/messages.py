"""Posting a message (chat-ui 2023, docs/protocol.md "Send a message"): the exchange's place in the
conversation's tree, the prompt, and the answer streamed and saved.

A message without ``is_retry`` is appended to the branch the person looks at. ``is_retry`` names a
user message: with its own text it regenerates the answer (a new answer beside the old one), with
another text it is an edit (a new question beside the old one, with its answer). Nothing is
overwritten: every version stays in the tree.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from h2ochat.protocol.parameters import request_parameters
from h2ochat.protocol.tgi import MessageOptions, MessageRequest
from h2ochat.protocol.tree import Tree
from h2ochat.server.chatui.routes import owned_tree, runtime_of
from h2ochat.server.edge.http import CONFIG, MODELS, SESSION, STORE, ApiError, decode_body, limit_rate
from h2ochat.server.inference.backends import InputTooLong
from h2ochat.server.inference.runtime import Fitted, ModelRuntime
from h2ochat.server.storage import Conversation, MessageRow, Store
from h2ochat.server.streaming import Answer, TgiEvents, admit, stream_answer

__all__ = ["routes"]

log = logging.getLogger("h2ochat.server")

routes = web.RouteTableDef()


@routes.post("/conversation/{id}")
async def post_message(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    conversation, rows = await owned_tree(request)
    body: MessageRequest = decode_body(await request.read(), MessageRequest)
    options = _options(body)
    runtime = runtime_of(request, conversation)
    try:
        parameters = request_parameters(runtime.defaults, body.parameters, ceiling=config.max_new_tokens_limit)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if options.is_continue is True:
        return await _continue(request, runtime, conversation, rows, options, parameters)
    inputs = body.inputs
    if not inputs.strip():
        raise ApiError(400, "inputs is empty: send the user's message in inputs")
    if len(inputs) > config.max_input_chars:
        raise ApiError(400, f"inputs is {len(inputs)} characters; this server accepts at most {config.max_input_chars}")
    store, tree = request.app[STORE], Tree(rows.values())
    parent_id, user = _place(tree, rows, conversation, options, inputs)
    if options.response_id == options.id or options.response_id in rows:
        raise ApiError(400, f"options.response_id {options.response_id} is already used; send a new UUID")
    await _count_message(request, runtime)
    system, messages = _branch(rows, tree.path(parent_id))
    if user is not None:
        messages.append({"role": "user", "content": inputs})
    fitted = await _fit(runtime, messages, parameters, system=system)
    await store.begin_exchange(
        conversation.id, parent_id, user, options.response_id, left_out=fitted.left_out, limit=config.max_messages
    )
    return await _stream_answer(request, runtime, conversation, fitted, options.response_id, inputs)


def _branch(rows: dict[str, MessageRow], path: list[str]) -> tuple[str, list[dict[str, str]]]:
    """What the model is sent for a path from the root: the system prompt, and the messages after it."""
    return rows[path[0]].content, [{"role": rows[i].role, "content": rows[i].content} for i in path[1:]]


def _place(
    tree: Tree, rows: dict[str, MessageRow], conversation: Conversation, options: MessageOptions, inputs: str
) -> tuple[str, tuple[str, str] | None]:
    """Where the exchange goes: its parent, and the user message to add (None to regenerate an answer)."""
    retried = rows.get(options.id)
    if not options.is_retry:
        if retried is not None:
            raise ApiError(
                400,
                f"options.id {options.id} is already a message of this conversation; "
                "send a new id, or is_retry: true to answer it again",
            )
        # The active leaf is always a message of the tree; the guard covers a database edited by hand.
        active = conversation.active_id if conversation.active_id in tree else tree.newest_leaf(conversation.root_id)
        return active, (options.id, inputs)
    if retried is None:
        raise ApiError(400, f"options.id {options.id} is not a message of this conversation, so it cannot be retried")
    if retried.role != "user":
        raise ApiError(400, f"options.id {options.id} is not a user message; only those can be retried")
    if inputs == retried.content:
        return retried.id, None  # a new answer beside the others
    assert retried.parent_id is not None  # a user message is never the root
    return retried.parent_id, (str(uuid.uuid4()), inputs)  # an edited question beside the old one


async def _continue(
    request: web.Request,
    runtime: ModelRuntime,
    conversation: Conversation,
    rows: dict[str, MessageRow],
    options: MessageOptions,
    parameters: Any,
) -> web.StreamResponse:
    """``is_continue``: the model goes on with an answer that ends its branch, which grows in place."""
    store, tree = request.app[STORE], Tree(rows.values())
    last = rows.get(options.id)
    if last is None or last.role != "assistant" or tree.children[last.id]:
        raise ApiError(
            400, f"options.id {options.id} is not an answer that ends a branch; only such an answer can be continued"
        )
    if options.response_id != options.id:
        raise ApiError(400, "With is_continue, options.response_id must repeat options.id: the answer goes on in place")
    await _count_message(request, runtime)
    system, messages = _branch(rows, tree.ancestors(last.id))
    fitted = await _fit(runtime, messages, parameters, prefix=last.content, system=system)
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


async def _fit(
    runtime: ModelRuntime, messages: list[dict[str, str]], parameters: Any, *, system: str, prefix: str = ""
) -> Fitted:
    try:  # a message the model cannot take is refused before it is stored, too
        return await runtime.fit(messages, parameters, prefix, system=system)
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


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True
