"""Today's chat-ui JSON routes under ``/api/v2`` and the prompt read (CHATUI-CURRENT.md sections 3 and 10).

Answers are superjson envelopes (:mod:`h2ochat.protocol.superjson`), as chat-ui's are; refusals are
``{"message": …}``. A conversation of another session reads as missing (404) on every route, where
chat-ui says 403 on ``GET /api/v2/conversations/<id>``: telling apart "not yours" from "not there"
would tell a stranger which ids exist.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from aiohttp import web

from h2ochat.protocol import superjson
from h2ochat.protocol.chatui_bodies import announce_generations
from h2ochat.protocol.tree import Tree
from h2ochat.server.chatui.answering import branch, fit, saved_parameters
from h2ochat.server.chatui.documents import conversation_document, conversation_summary, moment
from h2ochat.server.chatui.routes import (
    owned,
    owned_tree,
    remove_message,
    runtime_of,
    save_session_settings,
    unknown_model,
)
from h2ochat.server.chatui.share_reads import is_share_id, read_share
from h2ochat.server.chatui.web_search import sources_by_answer, with_sources
from h2ochat.server.edge.http import (
    CONFIG,
    DEVICE,
    MODELS,
    PERSON,
    SESSION,
    SESSION_FOUND,
    STORE,
    ApiError,
    decode_body,
    json_response,
)

__all__ = ["routes"]

routes = web.RouteTableDef()

PAGE_SIZE = 30  # conversations per page, as chat-ui lists them
_CONVERSATION_ID = re.compile(r"[0-9a-f]{24}")
_SUCCESS = {"json": {"success": True}}


def envelope(value: Any, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(superjson.encode(value), headers=headers)


@routes.get("/api/v2/models")
async def models(request: web.Request) -> web.StreamResponse:
    listed = [
        {
            "id": runtime.config.name,
            "name": runtime.config.name,
            "displayName": runtime.config.display_name or runtime.config.name,
            "description": runtime.config.description,
            "preprompt": runtime.config.preprompt,
            "promptExamples": [{"title": e.title, "prompt": e.prompt} for e in runtime.config.prompt_examples],
            "multimodal": False,
            "supportsTools": False,
            "supportsReasoning": False,
            "supportsArtifacts": False,
            "unlisted": False,
            "hasInferenceAPI": False,
            "isRouter": False,
        }
        for runtime in request.app[MODELS].runtimes.values()
    ]
    # Beside the envelope (superjson reads only `json` and `meta`): this server speaks 2023 as well,
    # so h2ochat's client, whose probe is this route, keeps 2023's generation parameters and details.
    body = announce_generations(superjson.encode(listed))
    return json_response(body, headers={"Cache-Control": "private, max-age=60"})


@routes.get("/api/v2/conversations")
async def list_conversations(request: web.Request) -> web.StreamResponse:
    raw = request.query.get("p", "0")
    if not raw.isdigit():
        raise ApiError(400, f"p is the page number (0, 1, …), got {raw[:20]!r}")
    page = int(raw)
    conversations = await request.app[STORE].conversations(request[SESSION]) if request[SESSION] else []
    shown = conversations[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
    more = len(conversations) > (page + 1) * PAGE_SIZE
    return envelope({"conversations": [conversation_summary(c) for c in shown], "hasMore": more})


@routes.get("/api/v2/conversations/{id}")
async def get_conversation(request: web.Request) -> web.StreamResponse:
    if is_share_id(request.match_info["id"]):  # anyone with a share's id reads it, without a session
        return envelope(await read_share(request, request.match_info["id"]))
    _check_id(request)
    conversation, rows = await owned_tree(request)
    document = conversation_document(conversation, list(rows.values()))
    sources = await sources_by_answer(request.app[STORE], conversation.id)
    document["messages"] = [with_sources(node, sources) for node in document["messages"]]
    return envelope(document)


class Rename(msgspec.Struct, forbid_unknown_fields=True):
    title: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    model: str | None = None


@routes.patch("/api/v2/conversations/{id}")
async def update_conversation(request: web.Request) -> web.StreamResponse:
    _check_id(request)
    conversation = await owned(request)
    body = decode_body(await request.read(), Rename)
    if body.model is not None and body.model != conversation.model:
        if request.app[MODELS].get(body.model) is None:
            raise unknown_model(body.model, request.app[MODELS])
        raise ApiError(400, "This server keeps a conversation on the model it began with; start a new conversation")
    if body.title is not None:
        title = body.title.strip()
        if not 1 <= len(title) <= 100:
            raise ApiError(400, f"title must be 1 to 100 characters, got {len(title)}")
        await request.app[STORE].rename_conversation(conversation.id, request[SESSION], title)
    return json_response(_SUCCESS)


@routes.delete("/api/v2/conversations/{id}")
async def delete_conversation(request: web.Request) -> web.StreamResponse:
    _check_id(request)
    stop = "the conversation was deleted"
    if not await request.app[STORE].delete_conversation(request.match_info["id"], request[SESSION], stop=stop):
        raise ApiError(404, "Conversation not found")
    return json_response(_SUCCESS)


@routes.delete("/api/v2/conversations/{id}/message/{message}")
async def delete_message(request: web.Request) -> web.StreamResponse:
    _check_id(request)
    await remove_message(request)
    return json_response(_SUCCESS)


def _check_id(request: web.Request) -> None:
    conversation_id = request.match_info["id"]
    if not _CONVERSATION_ID.fullmatch(conversation_id):
        raise ApiError(400, f"Invalid conversation id {conversation_id[:40]!r}: ids are 24 hexadecimal characters")


# The session's settings ---------------------------------------------------------------------------


@routes.get("/api/v2/user/settings")
async def get_settings(request: web.Request) -> web.StreamResponse:
    session = request.get(SESSION_FOUND)
    accepted = session.ethics_accepted_at if session is not None else None
    active = session.active_model if session is not None else None
    engine = request.app[CONFIG].web_search.enabled
    return envelope(
        {
            "welcomeModalSeen": accepted is not None,
            "welcomeModalSeenAt": None if accepted is None else moment(accepted),
            "activeModel": active or request.app[MODELS].names[0],
            "streamingMode": "raw",
            "directPaste": False,
            "hapticsEnabled": True,
            "hidePromptExamples": {},
            "shareConversationsWithModelAuthors": session.share_conversations if session is not None else True,
            # h2ochat's: the person's "Search the web" choice, and whether this server has an engine
            # (without one, the page shows no switch and searchEnabled is false whatever was chosen).
            "searchEnabled": engine and session is not None and session.search_enabled,
            "webSearchAvailable": engine,
            "customPrompts": {},
            "customPromptsEnabled": {},
            "multimodalOverrides": {},
            "toolsOverrides": {},
            "artifactsOverrides": {},
            "providerOverrides": {},
            "reasoningEffortOverrides": {},
            "reasoningOverrides": {},
        }
    )


class Settings(msgspec.Struct, rename="camel"):
    """Today's settings body: every field optional; those this server does not keep are accepted and dropped."""

    active_model: str | None = None
    welcome_modal_seen: bool | None = None
    share_conversations_with_model_authors: bool | None = None
    search_enabled: bool | None = None


@routes.post("/api/v2/user/settings")
async def post_settings(request: web.Request) -> web.StreamResponse:
    if request.content_type != "application/json":
        raise ApiError(415, f"Send the settings as JSON (Content-Type: application/json), not {request.content_type}")
    body = decode_body(await request.read(), Settings)
    models = request.app[MODELS]
    if body.active_model is not None and body.active_model not in models.names:
        raise unknown_model(body.active_model, models)
    found = request.get(SESSION_FOUND)
    share = body.share_conversations_with_model_authors
    if share is None:
        share = found.share_conversations if found is not None else True
    await save_session_settings(request, body.active_model, share, body.welcome_modal_seen is True, body.search_enabled)
    return web.Response(status=200)


@routes.get("/api/v2/user")
async def user(request: web.Request) -> web.StreamResponse:
    """The person the identity proxy names (chat-ui's user fields), or null for an anonymous session."""
    person = request.get(PERSON)
    if person is None:
        return envelope(None)
    return envelope(
        {
            "id": person.id,
            "username": person.name or person.login,
            "email": person.login if "@" in person.login else None,
            "avatarUrl": None,
            # A browser signed in here signs out here; a person named by the proxy or a key, at the proxy.
            "logoutDisabled": DEVICE not in request or not request.app[CONFIG].sign_in,
            "isAdmin": person.login in request.app[CONFIG].admins,
            "isEarlyAccess": False,
        }
    )


@routes.get("/api/v2/feature-flags")
async def feature_flags(request: web.Request) -> web.StreamResponse:
    person = request.get(PERSON)
    admin = person is not None and person.login in request.app[CONFIG].admins  # sees the use by person
    login = request.app[CONFIG].sign_in
    flags = {"enableAssistants": False, "loginEnabled": login, "isAdmin": admin, "transcriptionEnabled": False}
    return envelope(flags)


# The prompt of a message ----------------------------------------------------------------------------


@routes.get("/conversation/{id}/message/{message}/prompt")
async def prompt(request: web.Request) -> web.StreamResponse:
    """The request the model was (or would be) sent for that message: for an answer, the branch
    before it; for a question, the branch through it."""
    conversation, rows = await owned_tree(request)
    message_id = request.match_info["message"]
    row = rows.get(message_id)
    if row is None:
        raise ApiError(404, f"Message not found: {message_id[:60]!r} is not a message of this conversation")
    runtime = runtime_of(request, conversation)
    tree = Tree(rows.values())
    path = tree.ancestors(row.id) if row.role == "assistant" else tree.path(row.id)
    system, messages = branch(rows, path)
    fitted = await fit(runtime, messages, saved_parameters(request, runtime, conversation), system=system)
    generation = fitted.request
    return json_response(
        {
            # None where the model's own chat template renders the messages (the backend does it).
            "prompt": generation.prompt,
            "model": conversation.model,
            "parameters": msgspec.to_builtins(generation.parameters),
            "messages": generation.messages,
        }
    )
