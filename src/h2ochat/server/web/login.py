"""Sign-in with OpenID Connect (README "Sign-in with OpenID Connect"): ``/login``, its callback, ``/logout``.

``GET /login?next=/path`` starts a sign-in (state, nonce and PKCE verifier kept in the database, ten
minutes, so the callback may reach any replica) and sends the browser to the provider. The callback
spends the state once, has the code exchanged and the ID token checked (web/oidc.py), and names the
person (their e-mail, else their user name, else the provider's subject), refused unless
``allowed_emails`` or ``allowed_domains`` (when set) admit them. The browser's anonymous conversations
move to the person, and the browser becomes a device of the person's session with a fresh secret (no
session id from before the sign-in survives it), so that each browser signs out on its own.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from aiohttp import web

from h2ochat.server.edge.http import (
    CONFIG,
    DEVICE,
    PERSON,
    SESSION,
    STORE,
    ApiError,
    DeviceCookie,
    json_response,
    limit_rate,
)
from h2ochat.server.edge.security import public
from h2ochat.server.edge.sessions import COOKIE
from h2ochat.server.storage.devices import new_code, new_secret
from h2ochat.server.storage.people import LOGIN, Login
from h2ochat.server.web.oidc import Provider, SignInRefused

__all__ = ["PROVIDER", "routes", "safe_next"]

routes = web.RouteTableDef()
PROVIDER = web.AppKey("oidc_provider", Provider)
LOGIN_TTL = 600.0  # seconds a sign-in may take at the provider
_SAFE_PATH = re.compile(r"/(?![/\\])[^\s\\]*")  # this site's own path: not //host, not /\host


def safe_next(text: str) -> str:
    """Where to return after signing in: a path of this site, or its root (never another site)."""
    return text if _SAFE_PATH.fullmatch(text) and len(text) <= 2000 else "/"


def _provider(request: web.Request) -> Provider:
    provider = request.app.get(PROVIDER)
    if provider is None:
        raise ApiError(404, "Sign-in is off on this server (no oidc_issuer in its configuration)")
    return provider


def _callback_url(request: web.Request) -> str:
    scheme, host = public(request)
    return f"{scheme}://{host}{request.app[CONFIG].base_path}/login/callback"


@routes.get("/login")
async def login(request: web.Request) -> web.StreamResponse:
    provider, config = _provider(request), request.app[CONFIG]
    # Each start stores a row for ten minutes: as many per address as new sessions, no more.
    per_minute = config.new_sessions_per_minute
    what = f"sign-ins begun: this server accepts {per_minute} per minute per client address"
    await limit_rate(request.app[STORE], f"logins:{request.remote}", per_minute, what)
    wanted = safe_next(request.query.get("next", "/"))
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    begun = Login(nonce, verifier, wanted, request.get(SESSION) or "")
    await request.app[STORE].begin_login(state, begun, LOGIN_TTL)
    try:
        target = await provider.authorize_url(_callback_url(request), state, nonce, verifier)
    except SignInRefused as exc:
        raise ApiError(502, f"Sign-in is unavailable: {exc}") from None
    raise web.HTTPSeeOther(target, headers={"Cache-Control": "no-store"})


@routes.get("/login/callback")
async def callback(request: web.Request) -> web.StreamResponse:
    provider, store, config = _provider(request), request.app[STORE], request.app[CONFIG]
    begun = await store.take_login(request.query.get("state", "")[:100])
    if begun is None:
        raise ApiError(400, "This sign-in is unknown, expired or already used: sign in again from the page")
    if "error" in request.query or "code" not in request.query:
        why = request.query.get("error_description") or request.query.get("error") or "no code"
        raise ApiError(400, f"The provider did not sign you in: {why[:200]}")
    try:
        claims = await provider.sign_in(
            request.query["code"][:2000], _callback_url(request), begun.verifier, begun.nonce
        )
    except SignInRefused as exc:
        raise ApiError(400, f"Sign-in refused: {exc}") from None
    login = _login_of(claims)
    _admit(config, login)
    name = str(claims.get("name") or "")[:200]
    person, session = await store.person_session(login, name)
    if begun.session_id and begun.session_id != session.id:
        await store.merge_session(begun.session_id, session.id)
    # This browser becomes a device of the person's session: a code made and spent at once.
    code, secret = new_code(), new_secret()
    await store.device_code(session.id, code, 60)
    await store.link_device(code, secret, f"Signed in as {person.login}"[:200])
    request[SESSION] = session.id
    request[DEVICE] = DeviceCookie("", secret)
    raise web.HTTPSeeOther(config.base_path + begun.next, headers={"Cache-Control": "no-store"})


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    """Sign this browser out: its device is detached, so its cookie names nothing from now on."""
    device, session = request.get(DEVICE), request.get(SESSION)
    if device is not None and session and PERSON in request:
        await request.app[STORE].detach_device(session, device.id)
    request.pop(SESSION, None)  # no cookie set again on this answer; the one the browser has is dropped
    response = json_response({"signedOut": True})
    path = request.app[CONFIG].base_path or "/"
    response.headers.add("Set-Cookie", f"{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Lax")
    return response


def _login_of(claims: dict[str, Any]) -> str:
    """The person's login: their e-mail when the provider vouches for it (or does not say), else their
    user name, else the provider's subject."""
    email = claims.get("email")
    if isinstance(email, str) and email and claims.get("email_verified", True) is not False:
        found = email
    else:
        found = str(claims.get("preferred_username") or claims.get("sub") or "")
    login = found.strip().lower()
    if not LOGIN.fullmatch(login):
        raise ApiError(400, "The provider named no usable login (an e-mail, a user name or a subject)")
    return login


def _admit(config: Any, login: str) -> None:
    emails, domains = config.allowed_emails, config.allowed_domains
    if not emails and not domains:
        return
    domain = login.rpartition("@")[2] if "@" in login else None
    if login in emails or (domain is not None and domain in domains):
        return
    raise ApiError(403, f"{login} may not sign in to this server (allowed_emails, allowed_domains): ask its owner")
