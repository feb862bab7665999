"""The web chat page: its HTML at ``/`` and ``/conversation/<id>``, its static files, its security headers.

Under a ``base_path`` (``/chat``) all of it moves there: the HTML names it in ``<base href>``, and
every address in the page and its scripts is relative.

The page is plain HTML, CSS and JavaScript modules from ``static/`` (no build
step); it talks to the server only through the chat protocol and the JSON
reads under ``/api/``. Static files are read once, kept in memory with a
gzipped copy, and served with an ETag and ``Cache-Control: no-cache``, so a
browser revalidates them cheaply (304) and never runs a stale script.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from h2ochat.server.edge.http import CONFIG, SESSION, STORE, ApiError
from h2ochat.server.storage.shares import SHARE_ID

__all__ = ["SECURITY_HEADERS", "StaticFile", "routes", "static_files"]

STATIC = Path(__file__).with_name("static")

# Scripts and styles from this server only: model text that slipped past the
# sanitizer still could not run. Images only from here too, so that a Markdown
# image in an answer cannot send the conversation to another host. base-uri 'self': the page's own
# <base href> (the server's base path) and no other.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
}

routes = web.RouteTableDef()


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes
    etag: str
    content_type: str


@functools.cache
def static_files() -> dict[str, StaticFile]:
    """Every servable file under ``static/`` by its URL path below ``/static/`` (licences and notes excluded)."""
    files: dict[str, StaticFile] = {}
    for path in sorted(STATIC.rglob("*")):
        content_type = _TYPES.get(path.suffix)
        if content_type is None or not path.is_file() or path.suffix == ".html":  # pages are templates
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        gzipped = gzip.compress(body, 9, mtime=0)
        files[path.relative_to(STATIC).as_posix()] = StaticFile(body, gzipped, etag, content_type)
    return files


@functools.cache
def _index() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


@routes.get("/")
@routes.get("/conversation/{id}")
async def page(request: web.Request) -> web.StreamResponse:
    """The page itself; the conversation, if any, is read by the page from the address."""
    config = request.app[CONFIG]
    if SHARE_ID.fullmatch(request.match_info.get("id", "")):
        # chat-ui shows a share at /conversation/<shareId>: links made for it lead to the share's page.
        raise web.HTTPFound(f"{config.base_path}/r/{request.match_info['id']}")
    session = await request.app[STORE].session(request[SESSION])
    facts = {
        # What the page cannot learn from the JSON reads: the gate, this session's answer to it, the limit.
        "welcomeGate": config.welcome_gate,
        "accepted": session is not None and session.ethics_accepted_at is not None,
        "activeModel": session.active_model if session is not None else None,
        "maxInputChars": config.max_input_chars,
        "maxNewTokens": config.max_new_tokens_limit,  # the most a conversation's settings may ask for
        "resumable": config.resumable_answers,  # an answer being generated can be reattached to
    }
    # One <base href> makes every address of the page and its scripts relative to the base path, the
    # same files serving "/" and "/chat/"; rewriting each address instead would be one per file to keep.
    base = html.escape(config.base_path + "/", quote=True)
    text = _index().replace("__FACTS__", html.escape(json.dumps(facts), quote=True)).replace("__BASE__", base)
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=headers)


@routes.get("/static/{path:.+}")
async def static(request: web.Request) -> web.StreamResponse:
    file = static_files().get(request.match_info["path"])
    if file is None:
        raise ApiError(404, f"No such file: {request.path}")
    headers = {**SECURITY_HEADERS, "ETag": file.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if file.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = file.content_type
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=file.gzipped, headers=headers)
    return web.Response(body=file.body, headers=headers)
