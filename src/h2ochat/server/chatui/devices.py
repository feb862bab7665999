"""One history in several browsers (docs/protocol.md section 17): codes, linking, the list, detaching.

A browser of a session asks for a one-time code (``POST /api/devices/code``); another browser enters it
(``POST /api/devices/link``) and gets a cookie of its own for the same session (storage/devices.py).
Linking needs no session and passes no welcome gate: the browser takes on the session's, gate
acceptance included. A browser that had a session of its own leaves it behind (its conversations stay
there, out of this browser's reach once its cookie is replaced; the page warns first).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from h2ochat.server.edge.http import (
    CONFIG,
    DEVICE,
    SESSION,
    STORE,
    ApiError,
    DeviceCookie,
    decode_body,
    json_response,
    limit_rate,
)
from h2ochat.server.edge.security import public
from h2ochat.server.storage.devices import FIRST_DEVICE, new_code, new_secret, normal_code

__all__ = ["device_label", "routes"]

routes = web.RouteTableDef()

FIRST_LABEL = "The browser that started this history"
# One body for every code that links nothing, whatever the reason: a guess learns nothing from it.
NO_SUCH_CODE = (
    "This code links nothing: it is unknown, already used, or expired. Ask the other browser for a new one "
    "(a code works once, for 10 minutes)"
)
_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("CrOS", "ChromeOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


class LinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    code: str


def device_label(user_agent: str) -> str:
    """A browser in words ("Chrome on Linux"), from fixed words only: nothing of the header is echoed."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), "A browser")
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    return f"{browser} on {system}" if system else browser


def _owned(request: web.Request) -> str:
    session = request[SESSION]
    if not session:
        raise ApiError(
            401,
            "This browser has no history on this server yet: start a conversation, or link it "
            "to another browser's history with a code (POST /api/devices/link)",
        )
    return session


def _code_link(request: web.Request, code: str) -> str:
    scheme, host = public(request)
    return f"{scheme}://{host}{request.app[CONFIG].base_path}/link?code={code}"


@routes.post("/api/devices/code")
async def make_code(request: web.Request) -> web.StreamResponse:
    """A new one-time code for this session (the one before it stops working)."""
    session = _owned(request)
    code = new_code()
    expires = await request.app[STORE].device_code(session, code, request.app[CONFIG].device_code_ttl)
    shown = f"{code[:4]}-{code[4:]}"
    return json_response({"code": shown, "url": _code_link(request, shown), "expiresAt": expires})


@routes.post("/api/devices/link")
async def link(request: web.Request) -> web.StreamResponse:
    """Attach this browser to the session of a live code, spending it."""
    config, store = request.app[CONFIG], request.app[STORE]
    # Each guess counts, right or wrong, before anything is looked up: per address, then from everyone.
    what = "tries at a device code"
    await limit_rate(
        store,
        f"device-link:{request.remote}",
        config.device_links_per_minute,
        f"{what}: this server accepts {config.device_links_per_minute} per minute per client address",
    )
    await limit_rate(
        store,
        "device-link:*",
        config.device_links_per_minute_all,
        f"{what}: this server accepts {config.device_links_per_minute_all} per minute in all",
    )
    body = decode_body(await request.read(), LinkRequest)
    code = normal_code(body.code[:64])
    secret = new_secret()
    session = (
        await store.link_device(code, secret, device_label(request.headers.get("User-Agent", ""))) if code else None
    )
    if session is None:
        raise ApiError(404, NO_SUCH_CODE)
    request[SESSION] = session
    request[DEVICE] = DeviceCookie("", secret)  # the cookie set on this answer is the new device's
    return json_response({"linked": True})


@routes.get("/link")
async def link_page(request: web.Request) -> web.StreamResponse:
    """A code's link opens the page with the code in the fragment (never sent to a server or its logs)."""
    code = normal_code(request.query.get("code", "")[:64])
    fragment = f"#link={code[:4]}-{code[4:]}" if code else "#link="
    raise web.HTTPSeeOther(f"{request.app[CONFIG].base_path}/{fragment}")


@routes.get("/api/devices")
async def list_devices(request: web.Request) -> web.StreamResponse:
    session = _owned(request)
    device = request.get(DEVICE)
    current = device.id if device is not None else FIRST_DEVICE
    return json_response(
        [
            {
                "id": d.id,
                "label": d.label or FIRST_LABEL,
                "createdAt": d.created_at,
                "lastSeen": d.seen_at,
                "current": d.id == current,
            }
            for d in await request.app[STORE].devices(session)
        ]
    )


@routes.delete("/api/devices/{id}")
async def detach(request: web.Request) -> web.StreamResponse:
    """Detach a device; its cookie names nothing from its next request. The first device's cookie is the
    session's id, so detaching it moves the session to a fresh id the other devices follow."""
    session, store = _owned(request), request.app[STORE]
    device_id = request.match_info["id"]
    device = request.get(DEVICE)
    current = device_id == (device.id if device is not None else FIRST_DEVICE)
    if device_id == FIRST_DEVICE:
        fresh = await store.renew_session(session)
        request[SESSION] = fresh
    elif not await store.detach_device(session, device_id):
        raise ApiError(404, f"This history has no device {device_id[:40]!r}: GET /api/devices lists them")
    if not current:
        return json_response({"detached": device_id, "current": False})
    request[SESSION] = ""  # no cookie set, and the one the browser holds is cleared
    path = request.app[CONFIG].base_path or "/"
    message = "This browser is detached: it no longer reaches this history (a code from another device brings it back)"
    response = json_response({"detached": device_id, "current": True, "message": message})
    response.headers.add("Set-Cookie", f"hf-chat=; Path={path}; Max-Age=0; HttpOnly; SameSite=Lax")
    return response
