"""The JSON read API of the chat protocol (docs/protocol.md, section 6): models, status, conversations.

h2ochat's additions for pages and scripts, answered from the session's own data; a conversation
of another session is answered exactly like a missing one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from h2ochat.protocol.tree import Tree
from h2ochat.server.chatui.routes import owned
from h2ochat.server.chatui.web_search import sources_by_answer, with_sources
from h2ochat.server.edge.http import MODELS, SESSION, STORE, json_response
from h2ochat.server.inference.runtime import ModelRuntime
from h2ochat.server.storage import Conversation, MessageRow

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/api/models")
async def list_models(request: web.Request) -> web.StreamResponse:
    return json_response(
        [
            {
                "id": runtime.config.name,
                "name": runtime.config.name,
                "displayName": runtime.config.display_name or runtime.config.name,
                "description": runtime.config.description,
                "preprompt": runtime.config.preprompt,
                "parameters": runtime.config.parameters,  # as configured: the model's recommended values
                "promptExamples": [{"title": e.title, "prompt": e.prompt} for e in runtime.config.prompt_examples],
                **_token_limits(runtime),
            }
            for runtime in request.app[MODELS].runtimes.values()
        ]
    )


def _token_limits(runtime: ModelRuntime) -> dict[str, int]:
    """Where the server knows the model's tokens: what one answer holds, and the most a message may take."""
    limits = runtime.token_limits()
    return {} if limits is None else {"contextTokens": limits.context, "maxInputTokens": limits.input}


@routes.get("/api/status")
async def status(request: web.Request) -> web.StreamResponse:
    """Per model: answers running and queued, and, for batching backends, places and recent tokens/s."""
    models = {}
    for name, runtime in request.app[MODELS].runtimes.items():
        backends = [backend.stats() for backend in runtime.backends if hasattr(backend, "stats")]
        models[name] = {"running": runtime.running, "queued": runtime.waiting, "endpoints": backends}
    return json_response({"models": models})


@routes.get("/api/conversations")
async def list_conversations(request: web.Request) -> web.StreamResponse:
    store, session, query = request.app[STORE], request[SESSION], request.query.get("q", "").strip()
    # ?q=: only those whose title or messages hold the text (the web page's search box).
    conversations = await (store.search_conversations(session, query) if query else store.conversations(session))
    return json_response([_conversation_json(c) for c in conversations])


@routes.get("/api/conversation/{id}")
async def get_conversation(request: web.Request) -> web.StreamResponse:
    """The whole tree, in the order its messages were created (the system root first), with the leaf
    of the branch shown; each message with ``ancestors`` and ``children`` as current chat-ui has them."""
    conversation = await owned(request)
    rows = await request.app[STORE].messages(conversation.id)
    sources = await sources_by_answer(request.app[STORE], conversation.id)
    tree = Tree(rows)
    root = rows[0] if rows else None
    return json_response(
        {
            **_conversation_json(conversation),
            "rootMessageId": conversation.root_id,
            "activeMessageId": conversation.active_id,
            "preprompt": root.content if root is not None else "",
            "messages": [with_sources(_message_json(m, tree), sources) for m in rows],
        }
    )


def _conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "model": conversation.model,
        "createdAt": conversation.created_at,
        "updatedAt": conversation.updated_at,
        "settings": dict(conversation.settings),
    }


def _message_json(message: MessageRow, tree: Tree) -> dict[str, Any]:
    return {
        "id": message.id,
        "parentId": message.parent_id,
        "ancestors": tree.ancestors(message.id),
        "children": tree.children[message.id],
        "score": message.score,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "interrupted": message.status == "interrupted",
        "interruption": message.interruption,
        "finishReason": message.finish_reason,
        "generatedTokens": message.generated_tokens,
        "leftOut": message.left_out,
        "createdAt": message.created_at,
        "updatedAt": message.updated_at,
    }
