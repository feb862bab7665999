"""Posting a message (chat-ui 2023, docs/protocol.md "Send a message"; a multipart body is today's
chat-ui, answered by ``current_messages``): the exchange's place in the
conversation's tree, the prompt, and the answer streamed and saved.

A message without ``is_retry`` is appended to the branch the person looks at. ``is_retry`` names a
user message: with its own text it regenerates the answer (a new answer beside the old one), with
another text it is an edit (a new question beside the old one, with its answer). Nothing is
overwritten: every version stays in the tree.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from aiohttp import web

from h2ochat.protocol.parameters import request_parameters
from h2ochat.protocol.tgi import MessageOptions, MessageRequest
from h2ochat.protocol.tree import Tree
from h2ochat.server.chatui.answering import branch, count_message, fit, run_for, stream_and_save
from h2ochat.server.chatui.current_messages import post_current
from h2ochat.server.chatui.routes import is_uuid, owned_tree, runtime_of
from h2ochat.server.chatui.web_search import stored_context
from h2ochat.server.edge.http import CONFIG, STORE, ApiError, decode_body
from h2ochat.server.inference.runtime import ModelRuntime
from h2ochat.server.storage import Conversation, MessageRow
from h2ochat.server.streaming import TgiEvents
from h2ochat.server.websearch.search import with_context

__all__ = ["routes"]

log = logging.getLogger("h2ochat.server")

routes = web.RouteTableDef()


@routes.post("/conversation/{id}")
async def post_message(request: web.Request) -> web.StreamResponse:
    if request.content_type == "multipart/form-data":
        return await post_current(request)  # today's chat-ui; a JSON body is 2023's
    config = request.app[CONFIG]
    # The session and its welcome gate are checked in this read (app.sessions lets it): a refusal is worded
    # by the middleware, which then looks the session up.
    conversation, rows = await owned_tree(request, accepted=config.welcome_gate)
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
    await count_message(request, runtime, TgiEvents())
    system, messages = branch(rows, tree.path(parent_id))
    if user is not None:
        messages.append({"role": "user", "content": inputs})
    if options.web_search_id:  # the passages of the search run before (web_search), for the model only
        context = await stored_context(request, conversation, options.web_search_id)
        messages[-1] = {"role": "user", "content": with_context(messages[-1]["content"], context)}
    fitted = await fit(runtime, messages, parameters, system=system)
    async with run_for(request, conversation, options.response_id, "2023") as run_id:
        await store.begin_exchange(
            conversation.id, parent_id, user, options.response_id, left_out=fitted.left_out, limit=config.max_messages
        )
    if options.web_search_id:
        await store.attach_web_search(options.web_search_id, options.response_id)
    return await stream_and_save(
        request, runtime, conversation, fitted, options.response_id, TgiEvents(inputs), run_id=run_id
    )


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
    await count_message(request, runtime, TgiEvents())
    system, messages = branch(rows, tree.ancestors(last.id))
    fitted = await fit(runtime, messages, parameters, prefix=last.content, system=system)
    async with run_for(request, conversation, last.id, "2023") as run_id:
        if not await store.resume_answer(conversation.id, last.id):
            raise ApiError(409, "This answer is being generated already; wait for it to end, then continue it")
    return await stream_and_save(
        request, runtime, conversation, fitted, last.id, TgiEvents(), run_id=run_id, before=last
    )


def _options(body: MessageRequest) -> MessageOptions:
    options = body.options
    if options is None:
        raise ApiError(400, 'options is required: {"id": <uuid>, "response_id": <uuid>, "is_retry": false}')
    for name in ("id", "response_id"):
        if not is_uuid(getattr(options, name)):
            raise ApiError(400, f"options.{name} must be a UUID, got {getattr(options, name)!r}")
    if options.is_retry and options.is_continue is True:
        raise ApiError(400, "options.is_retry and options.is_continue exclude each other: send one of them")
    return options
