"""Export everything and import (docs/protocol.md section 16): ``GET /api/export``, ``POST /api/import``.

The export is a zip (:mod:`.archive`) of every conversation of the session; an import takes that zip,
its JSON, or a ChatGPT ``conversations.json``, checks all of it, then writes it in one transaction
(:meth:`~h2ochat.server.storage.portability.Portability.import_conversations`): a file is imported
whole or refused whole, with a 400 or 413 that says why.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from h2ochat.protocol.export import ImportLimits, ImportRefused
from h2ochat.server.chatui.archive import read_import, to_export, write_zip
from h2ochat.server.config import ServerConfig
from h2ochat.server.edge.http import CONFIG, MODELS, SESSION, STORE, ApiError, json_response
from h2ochat.server.edge.quotas import limits_of
from h2ochat.server.storage import Store
from h2ochat.server.storage.portability import Imported

__all__ = ["export_zip", "import_body", "import_limits", "routes"]

routes = web.RouteTableDef()


def import_limits(config: ServerConfig) -> ImportLimits:
    messages = config.max_messages or 1_000_000  # 0 is "no limit" there
    return ImportLimits(
        config.max_import_conversations,
        messages,
        config.max_import_message_chars,
        config.max_import_bytes,
        config.max_new_tokens_limit,
    )


@routes.get("/api/export")
async def export(request: web.Request) -> web.StreamResponse:
    """Every conversation of the session (none without one) as a zip to download."""
    session = request[SESSION]
    body = await export_zip(request.app[STORE], session) if session else write_zip(to_export([]))
    headers = {"Content-Disposition": 'attachment; filename="h2ochat-export.zip"', "Cache-Control": "no-store"}
    return web.Response(body=body, content_type="application/zip", headers=headers)


@routes.post("/api/import")
async def import_(request: web.Request) -> web.StreamResponse:
    """Add the file's conversations to the session under new ids; those imported before are skipped."""
    config = request.app[CONFIG]
    body = await _body(request, config.max_import_bytes)
    if not body.strip():
        raise ApiError(400, "The request has no body: send the export's zip, its JSON, or ChatGPT's conversations.json")
    try:
        imported = await import_body(
            request.app[STORE],
            config,
            request[SESSION],
            body,
            request.app[MODELS].names[0],
            limits_of(request).max_conversations,
        )
    except ImportRefused as exc:
        raise ApiError(exc.status, str(exc)) from None
    return json_response(
        {"imported": len(imported.conversations), "skipped": imported.skipped, "conversations": imported.conversations}
    )


async def export_zip(store: Store, session: str) -> bytes:
    """The session's export, as the route sends it."""
    return await asyncio.to_thread(write_zip, to_export(await store.export_conversations(session)))


async def import_body(
    store: Store, config: ServerConfig, session: str, body: bytes, model: str, max_conversations: int | None = None
) -> Imported:
    """Check a whole upload, then write it in one transaction (``model``: the one ChatGPT's get; with
    ``max_conversations``, that limit rather than the server's). :class:`ImportRefused` for a bad file,
    the store's errors past its limits."""
    # Off the event loop: unpacking, decoding and checking a large file takes a while.
    conversations = await asyncio.to_thread(read_import, body, import_limits(config), model)
    limit = config.max_conversations if max_conversations is None else max_conversations
    return await store.import_conversations(session, conversations, limit)


async def _body(request: web.Request, most: int) -> bytes:
    """The body, up to ``most`` bytes (larger than the server's usual body limit): a 413 past it, as soon
    as it is known (its Content-Length, or its bytes as they come)."""
    too_big = ApiError(
        413, f"The file is larger than {most} bytes, the most this server imports at once (max_import_bytes): split it"
    )
    if (request.content_length or 0) > most:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > most:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
