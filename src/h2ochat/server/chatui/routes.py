"""The chat-ui 2023 endpoints (docs/protocol.md, "Endpoints"): settings, conversations, messages.

Every refusal raises :class:`ApiError`, which the app turns into a JSON 4xx
that says what was wrong. A conversation of another session is answered
exactly like a missing one.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from aiohttp import web

from h2ochat.protocol.chatui_bodies import encode_create_answer
from h2ochat.protocol.parameters import check_settings
from h2ochat.protocol.tree import Tree
from h2ochat.server.chatui.documents import conversation_document
from h2ochat.server.chatui.share_reads import continue_from_share
from h2ochat.server.chatui.stops import StopPoint, stop_reason
from h2ochat.server.config import ServerConfig
from h2ochat.server.edge.http import (
    CONFIG,
    DEVICE,
    MODELS,
    SESSION,
    SESSION_FOUND,
    STORE,
    ApiError,
    BadBody,
    decode_body,
    json_response,
    parse_json,
)
from h2ochat.server.edge.quotas import limits_of
from h2ochat.server.edge.security import printable
from h2ochat.server.inference.backends import BackendError, Overloaded
from h2ochat.server.inference.runtime import ModelRuntime, Models
from h2ochat.server.inference.titles import summarize
from h2ochat.server.storage import Conversation, MessageRow

__all__ = [
    "is_uuid",
    "owned",
    "owned_tree",
    "remove_message",
    "routes",
    "runtime_of",
    "save_session_settings",
    "unknown_model",
]

log = logging.getLogger("h2ochat.server")

routes = web.RouteTableDef()


class CreateConversation(msgspec.Struct, forbid_unknown_fields=True):
    model: str
    preprompt: str | None = None  # the conversation's system prompt; None: the model's
    from_share: str | None = msgspec.field(default=None, name="fromShare")  # a copy of that share (share_reads)


class ConversationUpdate(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    title: str | None = None
    settings: Any = None  # checked by check_settings, whose errors say more than msgspec's would
    preprompt: str | None = None
    active_message_id: str | None = None  # any message: the branch through it becomes the one shown


def unknown_model(name: object, models: Models) -> ApiError:
    return ApiError(400, f"Unknown model {name!r}. Models served here: {', '.join(models.names)}")


async def owned(request: web.Request) -> Conversation:
    conversation = await request.app[STORE].conversation(request.match_info["id"], request[SESSION])
    if conversation is None:
        raise ApiError(404, "Conversation not found")
    return conversation


async def owned_tree(request: web.Request, *, accepted: bool = False) -> tuple[Conversation, dict[str, MessageRow]]:
    """:func:`owned` with the conversation's messages by id, read in the same statement (with ``accepted``:
    only for a session that accepted the welcome gate)."""
    store, session = request.app[STORE], request[SESSION]
    found = await store.conversation_with_messages(request.match_info["id"], session, accepted=accepted)
    if found is None:
        raise ApiError(404, "Conversation not found")
    conversation, rows = found
    return conversation, {row.id: row for row in rows}


def runtime_of(request: web.Request, conversation: Conversation) -> ModelRuntime:
    runtime = request.app[MODELS].get(conversation.model)
    if runtime is None:
        raise ApiError(
            410, f"The model {conversation.model!r} of this conversation is no longer served; start a new conversation"
        )
    return runtime


def check_preprompt(preprompt: str, config: ServerConfig) -> str:
    if len(preprompt) > config.max_input_chars:
        raise ApiError(
            400, f"preprompt is {len(preprompt)} characters; this server accepts at most {config.max_input_chars}"
        )
    return preprompt


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
    # welcomeModalSeen: today's chat-ui's name for the same acceptance, in its JSON settings.
    accepted = _truthy(form.get("ethicsModalAccepted")) or _truthy(form.get("welcomeModalSeen"))
    share = _truthy(form.get("shareConversationsWithModelAuthors"))
    # Absent: unchanged (a page posting only its model must not switch search off).
    search = _truthy(form["searchEnabled"]) if "searchEnabled" in form else None
    await save_session_settings(request, model, share, accepted, search)
    location = request.headers.get("Referer") or request.app[CONFIG].base_path + "/"
    if _prefers_html(request):
        return web.Response(status=303, headers={"Location": location})
    return json_response({"type": "redirect", "status": 303, "location": location})


async def save_session_settings(
    request: web.Request, model: str | None, share: bool, accepted: bool, search: bool | None = None
) -> None:
    """The settings of both generations, saved alike; the request's session may change (see below)."""
    store = request.app[STORE]
    # Without a session, the settings step issues one with the settings in one statement (app.sessions).
    request[SESSION] = await store.save_settings(request[SESSION], model, share, accepted, search)
    found = request.get(SESSION_FOUND)
    # A linked device (section 17) keeps its own secret whatever the session's id: nothing to renew.
    if accepted and found is not None and found.ethics_accepted_at is None and DEVICE not in request:
        # Accepting the welcome gate moves the session to a fresh id, so that one planted in the browser
        # before is worth nothing after. Only then: a page posts the settings again on every change of
        # model, and renewing each time would strand its requests already under way with the old id.
        request[SESSION] = await store.renew_session(request[SESSION])


@routes.post("/conversation")
async def create_conversation(request: web.Request) -> web.StreamResponse:
    models = request.app[MODELS]
    try:
        body = parse_json(await request.read(), CreateConversation)
    except BadBody as exc:
        raise ApiError(400, f'Send JSON {{"model": "<name>"}} ({exc}). Models: {", ".join(models.names)}') from None
    runtime = models.get(body.model)
    if runtime is None:
        raise unknown_model(body.model, models)
    config, store = request.app[CONFIG], request.app[STORE]
    if body.from_share is not None:
        if body.preprompt is not None:
            raise ApiError(
                400, "Send preprompt or fromShare, not both: a conversation continued from a share keeps its own"
            )
        return await _created_from_share(request, body.from_share, body.model)
    preprompt = runtime.config.preprompt if body.preprompt is None else check_preprompt(body.preprompt, config)
    created = await store.create_conversation(
        request[SESSION], body.model, limits_of(request).max_conversations, preprompt=preprompt
    )
    # Today's chat-ui adds the new conversation, system root and all, as a superjson string; 2023's
    # clients read conversationId only, so one answer serves both. Built from what was stored, not read back.
    document = conversation_document(created.conversation, [created.root])
    return web.Response(body=encode_create_answer(created.id, document), content_type="application/json")


async def _created_from_share(request: web.Request, share_id: str, model: str) -> web.StreamResponse:
    """The create answer for a conversation copied from a share (read back: the copy has many messages)."""
    conversation_id = await continue_from_share(request, share_id, model)
    found = await request.app[STORE].conversation_with_messages(conversation_id, request[SESSION])
    if found is None:  # deleted at once by another request of the session
        raise ApiError(404, "Conversation not found")
    document = conversation_document(*found)
    return web.Response(body=encode_create_answer(conversation_id, document), content_type="application/json")


@routes.delete("/conversation/{id}")
async def delete_conversation(request: web.Request) -> web.StreamResponse:
    conversation_id, stop = request.match_info["id"], "the conversation was deleted"
    # Its generations stop on every replica, told with the deletion itself.
    if not await request.app[STORE].delete_conversation(conversation_id, request[SESSION], stop=stop):
        raise ApiError(404, "Conversation not found")
    return web.Response(status=200)


@routes.patch("/conversation/{id}")
async def update_conversation(request: web.Request) -> web.StreamResponse:
    """A new title, settings, system prompt or branch shown, in any combination; everything is checked
    before anything is stored. Answers the leaf of the branch shown (``activeMessageId``)."""
    conversation = await owned(request)
    config, store, session = request.app[CONFIG], request.app[STORE], request[SESSION]
    body = decode_body(await request.read(), ConversationUpdate)
    title, settings = _update(body, config)
    preprompt = None if body.preprompt is None else check_preprompt(body.preprompt, config)
    leaf = conversation.active_id
    if body.active_message_id is not None:
        tree = Tree(await store.messages(conversation.id))
        if body.active_message_id not in tree:
            raise ApiError(404, f"activeMessageId {body.active_message_id} is not a message of this conversation")
        leaf = tree.newest_leaf(body.active_message_id)
    if title is not None:
        await store.rename_conversation(conversation.id, session, title)
    if settings is not None:
        await store.save_conversation_settings(conversation.id, session, settings)
    if preprompt is not None:
        await store.set_preprompt(conversation.id, preprompt)
    if leaf != conversation.active_id:
        await store.set_active(conversation.id, leaf)
    return json_response({"activeMessageId": leaf})


def _update(body: ConversationUpdate, config: ServerConfig) -> tuple[str | None, dict[str, Any] | None]:
    """The title and the settings of a PATCH, checked; None for what it leaves as it is."""
    if all(value is None for value in (body.title, body.settings, body.preprompt, body.active_message_id)):
        raise ApiError(
            400,
            'Send any of {"title": "<text>", "settings": {"temperature": 0.7, "max_new_tokens": 256}, '
            '"preprompt": "<system prompt>", "activeMessageId": "<message id>"}',
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
    """2023 sends no body; today's chat-ui may send its stop point, ``{generationId, seenContentLength}``,
    and the stopped answer is then saved as far as the person saw it (``stops``)."""
    conversation = await owned(request)
    raw = await request.read()
    point = decode_body(raw, StopPoint) if raw.strip() else None
    if point is not None and point.generation_id is not None and not is_uuid(point.generation_id):
        raise ApiError(400, f"generationId must be a UUID, the one sent with the message; got {point.generation_id!r}")
    # Through the store: the generation may run on another replica.
    await request.app[STORE].request_stop(conversation.id, stop_reason(point))
    return web.Response(status=200)


@routes.post("/conversation/{id}/summarize")
async def summarize_title(request: web.Request) -> web.StreamResponse:
    conversation = await owned(request)
    store = request.app[STORE]
    runtime = runtime_of(request, conversation)
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


class Vote(msgspec.Struct, forbid_unknown_fields=True):
    score: int


@routes.delete("/conversation/{id}/message/{message}")
async def delete_message(request: web.Request) -> web.StreamResponse:
    """A message and everything that follows it; the branch shown moves beside it, or up to its parent."""
    return json_response({"activeMessageId": await remove_message(request)})


async def remove_message(request: web.Request) -> str:
    """Delete the request's ``{message}`` and what follows it (both generations); the new active leaf."""
    conversation, by_id = await owned_tree(request)
    store, message_id = request.app[STORE], request.match_info["message"]
    rows = list(by_id.values())
    tree = Tree(rows)
    if message_id not in tree:
        raise ApiError(404, f"Message {message_id} is not a message of this conversation")
    if message_id == tree.root:
        raise ApiError(400, "The system message at the root cannot be deleted; delete the conversation instead")
    doomed = tree.subtree(message_id)
    leaf = tree.leaf_after_delete(message_id, conversation.active_id if conversation.active_id in tree else message_id)
    if not await store.delete_message(conversation.id, message_id, leaf):
        raise ApiError(404, f"Message {message_id} is not a message of this conversation")
    if any(row.status == "generating" for row in rows if row.id in doomed):
        await store.request_stop(conversation.id, "the message was deleted")
    return leaf


@routes.post("/conversation/{id}/message/{message}/vote")
async def vote(request: web.Request) -> web.StreamResponse:
    conversation = await owned(request)
    body = decode_body(await request.read(), Vote)
    if body.score not in (1, -1, 0):
        raise ApiError(400, f"score must be 1 (good), -1 (bad) or 0 (no vote), got {body.score}")
    if not await request.app[STORE].vote(conversation.id, request.match_info["message"], body.score):
        raise ApiError(404, f"Message {request.match_info['message']} is not an answer of this conversation")
    return web.Response(status=200)


# Helpers ----------------------------------------------------------------------------------------


async def _read_form(request: web.Request) -> Any:
    try:
        return await request.post()
    except web.HTTPException:
        raise  # too large: aiohttp's own refusal, worded by the app
    except Exception as exc:  # bad UTF-8, an unknown charset, a broken multipart body: the client's form
        raise ApiError(400, f"The form could not be read ({type(exc).__name__}: {exc})") from None


def is_uuid(value: str) -> bool:
    """Whether ``value`` is a UUID in any form Python reads (2023's ids and today's generationId)."""
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
