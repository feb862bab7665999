"""Export everything from a server and import into it (docs/protocol.md section 16), for the command line.

A server's history belongs to a session, named by its ``hf-chat`` cookie: give that cookie's value to
:class:`~h2ochat.providers.session.H2oSession` (``cookies={"hf-chat": value}``) to reach a session of
the browser's. An import without one starts a session, whose cookie :func:`import_history` returns.
"""

from __future__ import annotations

import json
from typing import Any

from yarl import URL

from h2ochat.providers.session import H2oSession

__all__ = ["COOKIE", "export_history", "import_history"]

COOKIE = "hf-chat"


async def export_history(session: H2oSession) -> bytes:
    """``GET /api/export``: the zip of every conversation of the session."""
    return await session._http.request("export", "GET", "/api/export")


async def import_history(session: H2oSession, body: bytes) -> tuple[dict[str, Any], str | None]:
    """``POST /api/import`` of an export's zip or JSON, or ChatGPT's conversations.json: the server's
    answer (``imported``, ``skipped``, ``conversations``) and the session's cookie after it."""
    transport = session._http
    kind = "application/zip" if body[:2] == b"PK" else "application/json"
    raw = await transport.request("import", "POST", "/api/import", content=body, headers={"Content-Type": kind})
    jar = transport.client().cookie_jar.filter_cookies(URL(session.root))
    cookie = jar.get(COOKIE)
    return json.loads(raw), cookie.value if cookie is not None else None
