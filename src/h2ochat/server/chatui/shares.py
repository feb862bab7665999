"""Sharing a conversation, for its owner (docs/protocol.md section 14): make a link, list them, revoke one.

``POST /conversation/<id>/share`` is current chat-ui's (``{"shareId"}``); listing, revoking and
expiry are h2ochat's. Readers are served by :mod:`.share_reads` and the page at ``/r/<id>``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from h2ochat.protocol.tree import Tree
from h2ochat.server.chatui.routes import owned_tree
from h2ochat.server.edge.http import CONFIG, SESSION, STORE, ApiError, decode_body, json_response
from h2ochat.server.edge.quotas import limits_of
from h2ochat.server.edge.security import public
from h2ochat.server.storage.shares import Share, Snapshot, TooManyShares

__all__ = ["MAX_EXPIRY_DAYS", "routes"]

routes = web.RouteTableDef()

MAX_EXPIRY_DAYS = 365


class ShareRequest(msgspec.Struct, forbid_unknown_fields=True):
    expires_in_days: Any = None  # checked below, in words msgspec's type errors would not give


@routes.post("/conversation/{id}/share")
async def share(request: web.Request) -> web.StreamResponse:
    """A link to a snapshot of the conversation's active branch; the same link for the same snapshot."""
    conversation, by_id = await owned_tree(request)
    raw = await request.read()
    days = _expiry(decode_body(raw, ShareRequest) if raw.strip() else ShareRequest())
    tree = Tree(by_id.values())
    leaf = conversation.active_id if conversation.active_id in tree else conversation.root_id
    branch = [by_id[message_id] for message_id in tree.path(leaf) if message_id in by_id]
    if len(branch) < 2:
        raise ApiError(400, "The conversation has no message yet: share it once it has one")
    if any(row.status == "generating" for row in branch):
        raise ApiError(409, "An answer of this conversation is still being written: share it once the answer ends")
    snapshot = Snapshot(conversation.id, conversation.title, conversation.model, branch, days)
    try:
        share_id = await request.app[STORE].share(request[SESSION], snapshot, limits_of(request).max_conversations)
    except TooManyShares as exc:
        raise ApiError(409, str(exc)) from None
    return json_response({"shareId": share_id, "url": link(request, share_id)})


def _expiry(body: ShareRequest) -> int | None:
    days = body.expires_in_days
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRY_DAYS:
        raise ApiError(
            400,
            f"expires_in_days must be a whole number of days from 1 to {MAX_EXPIRY_DAYS}, or left out for a link "
            f"that lasts until it is revoked; got {msgspec.json.encode(days).decode()[:40]}",
        )
    return days


def link(request: web.Request, share_id: str) -> str:
    """The address of the share's page, as the person reached this server (behind a proxy: its address)."""
    scheme, host = public(request)
    return f"{scheme}://{host}{request.app[CONFIG].base_path}/r/{share_id}"


@routes.get("/api/shares")
async def list_shares(request: web.Request) -> web.StreamResponse:
    """The session's live links, the newest first (none without a session)."""
    session = request[SESSION]
    shares = await request.app[STORE].shares(session) if session else []
    return json_response([_share_json(request, share) for share in shares])


def _share_json(request: web.Request, share: Share) -> dict[str, Any]:
    return {
        "shareId": share.id,
        "url": link(request, share.id),
        "conversationId": share.conversation_id,
        "title": share.title,
        "model": share.model,
        "createdAt": share.created_at,
        "expiresAt": share.expires_at,
    }


@routes.delete("/api/shares/{share_id}")
async def revoke(request: web.Request) -> web.StreamResponse:
    """The link stops working at once, for everyone; its snapshot is deleted."""
    share_id = request.match_info["share_id"]
    if not await request.app[STORE].revoke_share(share_id, request[SESSION]):
        raise ApiError(404, f"Shared link not found: {share_id[:40]!r} is none of this session's live links")
    return web.Response(status=200)
