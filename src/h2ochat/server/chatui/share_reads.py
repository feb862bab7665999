"""A shared conversation as anyone with its link reads and continues it (docs/protocol.md section 14).

No session is needed to read one. A revoked, expired or unknown share id reads exactly as a missing
conversation does: the same lookup (one statement, :meth:`~h2ochat.server.storage.shares.Shares.shared`)
and the same 404, whatever the reason.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from h2ochat.server.chatui.documents import conversation_document
from h2ochat.server.edge.http import MODELS, SESSION, STORE, ApiError
from h2ochat.server.edge.quotas import limits_of
from h2ochat.server.storage import Conversation, MessageRow
from h2ochat.server.storage.shares import SHARE_ID, Share

__all__ = ["MISSING", "continue_from_share", "is_share_id", "read_share", "share_document"]

MISSING = "Conversation not found"  # a missing conversation's words: a share says no more about itself


def is_share_id(value: str) -> bool:
    return SHARE_ID.fullmatch(value) is not None


def share_document(share: Share, rows: list[MessageRow]) -> dict[str, Any]:
    """The share as today's chat-ui's conversation document (``shared: true``), its id the share's."""
    as_conversation = Conversation(
        share.id, "", share.model, share.title, share.created_at, share.created_at, {}, share.root_id, share.leaf_id
    )
    return {**conversation_document(as_conversation, rows), "shared": True}


async def read_share(request: web.Request, share_id: str) -> dict[str, Any]:
    """The document of a live share, or the 404 of a missing conversation."""
    found = await request.app[STORE].shared(share_id) if is_share_id(share_id) else None
    if found is None:
        raise ApiError(404, MISSING)
    return share_document(*found)


async def continue_from_share(request: web.Request, share_id: str, model: str) -> str:
    """A new conversation of the request's session copied from the share: on the share's model while
    this server serves it, else on ``model`` (the request's, checked by the caller). Its id."""
    store = request.app[STORE]
    found = await store.shared(share_id) if is_share_id(share_id) else None
    if found is None:
        raise ApiError(404, f"{MISSING}: fromShare {share_id[:40]!r} is no live shared conversation")
    share = found[0]
    chosen = share.model if request.app[MODELS].get(share.model) is not None else model
    copied = await store.continue_share(share.id, request[SESSION], chosen, limits_of(request).max_conversations)
    if copied is None:  # revoked between the two statements
        raise ApiError(404, f"{MISSING}: fromShare {share_id[:40]!r} is no live shared conversation")
    return copied
