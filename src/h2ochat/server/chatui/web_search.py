"""Web search in the chat protocol (docs/protocol.md section 18), both generations.

2023: ``GET /conversation/<id>/web-search?prompt=`` runs and stores a search, streaming its progress
one JSON object a line and ending with ``{"type": "result", "id": <webSearchId>}``; the message posted
next with ``options.web_search_id`` is answered with that search's passages. Today's chat-ui sends
``"web_search": true`` in the message's ``data``: the search runs first, inside the answer's stream
(``webSearch`` updates). ``GET /search/<id>`` gives a stored search to its owner.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from h2ochat.protocol.websearch import SearchEvent, legacy_line, legacy_result, source_from
from h2ochat.server.chatui.routes import owned
from h2ochat.server.edge.http import CONFIG, SESSION, SESSION_FOUND, STORE, ApiError, json_response, limit_rate
from h2ochat.server.storage import Conversation, Store, now
from h2ochat.server.storage.web_searches import StoredSearch
from h2ochat.server.websearch.engines import engine_for
from h2ochat.server.websearch.fetcher import SafeFetcher
from h2ochat.server.websearch.search import Emit, Found, run_search

__all__ = ["routes", "search_and_store", "sources_by_answer", "stored_context", "with_sources"]

routes = web.RouteTableDef()


async def search_and_store(
    request: web.Request, conversation: Conversation, prompt: str, emit: Emit
) -> tuple[str, Found]:
    """Run a search for ``prompt`` (counted against the session's rate), store it, and give its id."""
    config = request.app[CONFIG].web_search
    engine = engine_for(config)
    if engine is None:
        raise ApiError(400, "Web search is off on this server: its [web_search] table names no engine")
    per_minute = config.max_searches_per_minute
    await limit_rate(
        request.app[STORE],
        f"searches:{request[SESSION]}",
        per_minute,
        f"web searches: this server runs {per_minute} per minute per session",
    )
    fetcher = SafeFetcher(
        allow_private=config.allow_private, timeout=config.fetch_timeout, max_bytes=config.max_page_bytes
    )
    found = await run_search(config, engine, fetcher, prompt, emit)
    search_id = str(uuid.uuid4())
    data = {
        "events": [event.to_json() for event in found.events],
        "sources": [source.to_json() for source in found.sources],
        "context": found.context,
    }
    stored = StoredSearch(search_id, conversation.id, prompt, json.dumps(data), None, now())
    await request.app[STORE].save_web_search(stored, request[SESSION])
    return search_id, found


async def stored_context(request: web.Request, conversation: Conversation, search_id: str) -> str:
    """The passages of the session's search ``search_id`` of this conversation (2023's ``web_search_id``)."""
    stored = await request.app[STORE].web_search(search_id, request[SESSION])
    if stored is None or stored.conversation_id != conversation.id:
        raise ApiError(
            404, f"web_search_id {search_id} is not a search of this conversation; run GET web-search?prompt= first"
        )
    return str(json.loads(stored.data)["context"])


async def sources_by_answer(store: Store, conversation_id: str) -> dict[str, list[dict[str, str]]]:
    """Each answer's sources, for the conversation's reads."""
    found: dict[str, list[dict[str, str]]] = {}
    for search in await store.answer_searches(conversation_id):
        assert search.answer_id is not None
        sources = json.loads(search.data)["sources"]
        found[search.answer_id] = [source_from(s).to_json() for s in sources]
    return found


def with_sources(message: dict[str, Any], sources: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """A message of a conversation read, with ``sources`` when a web search grounded it."""
    found = sources.get(message["id"])
    return message if found is None else {**message, "sources": found}


@routes.get("/conversation/{id}/web-search")
async def legacy_search(request: web.Request) -> web.StreamResponse:
    conversation = await owned(request)
    found = request.get(SESSION_FOUND)
    if request.app[CONFIG].welcome_gate and (found is None or found.ethics_accepted_at is None):
        # As 2023's message post: a search fetches pages for the session, so it waits for the settings step.
        raise ApiError(405, "You need to accept the welcome modal first")
    prompt = request.query.get("prompt", "").strip()
    if not prompt:
        raise ApiError(400, "prompt is empty: send the question as ?prompt=<text>")
    if len(prompt) > request.app[CONFIG].max_input_chars:
        raise ApiError(400, f"prompt is {len(prompt)} characters; this server accepts at most a message's length")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
    prepared: list[bool] = []

    async def emit(event: SearchEvent) -> None:
        if not prepared:  # after the rate limit and the engine check, which answer as errors of their own
            await response.prepare(request)
            prepared.append(True)
        await response.write(legacy_line(event))

    search_id, _ = await search_and_store(request, conversation, prompt, emit)
    await response.write(legacy_result(search_id))
    await response.write_eof()
    return response


@routes.get("/search/{id}")
async def get_search(request: web.Request) -> web.StreamResponse:
    stored = await request.app[STORE].web_search(request.match_info["id"], request[SESSION])
    if stored is None:
        raise ApiError(404, "Web search not found")
    data: Any = json.loads(stored.data)
    return json_response(
        {
            "id": stored.id,
            "conversationId": stored.conversation_id,
            "prompt": stored.prompt,
            "messages": data["events"],
            "sources": data["sources"],
            "context": data["context"],
            "answerId": stored.answer_id,
            "createdAt": stored.created_at,
        }
    )
