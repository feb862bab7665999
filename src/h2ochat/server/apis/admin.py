"""``GET /api/admin/usage``: every person's use, as JSON, for the admins (README "Quotas and use")."""

from __future__ import annotations

from aiohttp import web

from h2ochat.server.edge.http import json_response
from h2ochat.server.edge.quotas import people_usage

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/api/admin/usage")
async def usage(request: web.Request) -> web.StreamResponse:
    days, since, people = await people_usage(request)
    return json_response(
        {
            "days": days,
            "since": since,
            "people": [
                {
                    "login": p.login,
                    "name": p.name,
                    "messages": p.messages,
                    "tokens": p.tokens,
                    "conversations": p.conversations,
                    "lastSeen": p.last_seen,
                }
                for p in people
            ],
        }
    )
