"""``GET /admin/usage``: every person's use as a page, for the admins (README "Quotas and use").

Rendered on the server, every value escaped; no script, under the chat page's Content-Security-Policy.
"""

from __future__ import annotations

import html

from aiohttp import web

from h2ochat.server.edge.http import CONFIG
from h2ochat.server.edge.quotas import people_usage
from h2ochat.server.web.page import SECURITY_HEADERS

__all__ = ["routes"]

routes = web.RouteTableDef()
_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
_PERIODS = (1, 7, 30, 90, 365)


@routes.get("/admin/usage")
async def usage_page(request: web.Request) -> web.StreamResponse:
    days, since, people = await people_usage(request)
    base = html.escape(request.app[CONFIG].base_path + "/", quote=True)
    rows = "".join(
        "<tr>"
        f"<th scope=row>{html.escape(p.name or p.login)}<br><small>{html.escape(p.login)}</small></th>"
        f"<td>{p.messages:,}</td><td>{p.tokens:,}</td><td>{p.conversations:,}</td><td>{html.escape(p.last_seen)}</td>"
        "</tr>"
        for p in people
    )
    periods = " · ".join(
        f'<a href="{base}admin/usage?days={n}"{" aria-current=page" if n == days else ""}>{n} days</a>'
        for n in _PERIODS
    )
    text = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Use by person · h2ochat</title>
<link rel="icon" href="{base}static/icon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{base}static/shared.css">
</head>
<body>
<main>
<h1>Use by person</h1>
<p>From {html.escape(since)} (UTC) to today: {days} days. {periods}</p>
<table>
<caption>Messages answered and tokens generated in the period; conversations held now</caption>
<thead><tr><th scope=col>Person</th><th scope=col>Messages</th><th scope=col>Tokens</th>
<th scope=col>Conversations</th><th scope=col>Last seen</th></tr></thead>
<tbody>{rows or "<tr><td colspan=5>No one yet.</td></tr>"}</tbody>
</table>
<p><a href="{base}">Back to the chat</a></p>
</main>
</body>
</html>
"""
    return web.Response(text=text, content_type="text/html", charset="utf-8", headers=_HEADERS)
