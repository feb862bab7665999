"""The page of a shared conversation, ``/r/<id>``: read-only, for anyone with the link, without a session.

The share is read once, on the server: its Open Graph tags (``og:title``, ``og:description``) are
written into the HTML, escaped, and its messages go to the page as data in a ``<meta>`` attribute,
where ``static/shared.js`` renders them as the chat page does (marked, then DOMPurify): the text is
someone else's, so it reaches the DOM only as text or sanitized. The page is ``noindex`` (a meta tag
and ``X-Robots-Tag``), ``no-store`` (a revoked link is not served from a cache) and under the chat
page's Content-Security-Policy. A revoked, expired or unknown id gets the same 404 page.
"""

from __future__ import annotations

import functools
import html
import json
import re
from typing import Any

from aiohttp import web

from h2ochat.server.edge.http import CONFIG, MODELS, STORE
from h2ochat.server.storage import MessageRow
from h2ochat.server.storage.shares import SHARE_ID, Share
from h2ochat.server.web.page import SECURITY_HEADERS, STATIC

__all__ = ["routes"]

routes = web.RouteTableDef()

_PLACEHOLDER = re.compile(r"__(?:BASE|TITLE|DESCRIPTION|SHARE)__")
DESCRIPTION_CHARS = 200  # of the first question, in og:description
_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


@functools.cache
def _template(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


@routes.get("/r/{share_id}")
async def shared_page(request: web.Request) -> web.StreamResponse:
    share_id = request.match_info["share_id"]
    found = await request.app[STORE].shared(share_id) if SHARE_ID.fullmatch(share_id) else None
    base = html.escape(request.app[CONFIG].base_path + "/", quote=True)
    if found is None:
        text = _template("shared-missing.html").replace("__BASE__", base)
        return web.Response(status=404, text=text, content_type="text/html", charset="utf-8", headers=_HEADERS)
    share, rows = found
    values = {
        "__BASE__": base,
        "__TITLE__": html.escape(share.title, quote=True),
        "__DESCRIPTION__": html.escape(_description(share, rows), quote=True),
        "__SHARE__": html.escape(json.dumps(_page_data(request, share, rows)), quote=True),
    }
    # One pass: a title holding "__SHARE__" stays that text, not a placeholder filled in turn.
    text = _PLACEHOLDER.sub(lambda match: values[match.group()], _template("shared.html"))
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=_HEADERS)


def _description(share: Share, rows: list[MessageRow]) -> str:
    first = next((row.content for row in rows if row.role == "user"), "")
    words = " ".join(first.split())
    if len(words) > DESCRIPTION_CHARS:
        words = words[: DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return words or f"A conversation with {share.model}"


def _page_data(request: web.Request, share: Share, rows: list[MessageRow]) -> dict[str, Any]:
    """What the page shows, and the model "Continue" asks for: the share's while served here, else the first."""
    models = request.app[MODELS]
    served = models.get(share.model) is not None
    return {
        "id": share.id,
        "title": share.title,
        "model": share.model,
        "continueModel": share.model if served or not models.names else models.names[0],
        "createdAt": share.created_at,
        "expiresAt": share.expires_at,
        "messages": [
            {"role": row.role, "content": row.content, "status": row.status, "finishReason": row.finish_reason}
            for row in rows
            if row.role != "system"
        ],
    }
