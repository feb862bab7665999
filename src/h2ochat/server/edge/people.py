"""Who is asking (README "People: sign-in for teams"): a person, by their API key or their proxy's word.

With ``trusted_user_header`` set (``X-Forwarded-Email`` from oauth2-proxy, ``Remote-User`` from
Authelia, ``Tailscale-User-Login``), a request from one of ``forwarded_allow_ips`` that carries the
header is the person it names. From any other address the header is a client's own words: ignored,
and a warning logged once per address. A request carrying ``Authorization: Bearer h2o_…`` is the
person whose key that is, from anywhere; a key revoked or never issued is refused. Either way the
request is served under the person's session, whatever its cookies say.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from h2ochat.server.edge.http import API_KEY_ID, CONFIG, PERSON, SESSION, SESSION_FOUND, STORE, ApiError, route_path
from h2ochat.server.edge.security import address_in, printable
from h2ochat.server.storage import Session
from h2ochat.server.storage.devices import digest
from h2ochat.server.storage.people import API_KEY, LOGIN, Person

__all__ = ["WARNED", "identify"]

log = logging.getLogger("h2ochat.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 200
_WARNED_MAX = 1000  # addresses remembered for the once-per-address warning; then no more warnings
# Addresses already warned about (create_app sets it: an application's state is fixed once it runs).
WARNED = web.AppKey("people_warned", set[str])


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The person asking, if any: their session becomes the request's (edge/sessions.py leaves it)."""
    found = await _by_key(request) or await _by_header(request)
    if found is not None:
        request[PERSON], session = found
        request[SESSION], request[SESSION_FOUND] = session.id, session
    return await handler(request)


async def _by_key(request: web.Request) -> tuple[Person, Session] | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not API_KEY.fullmatch(token) or token == request.app[CONFIG].api_key:
        return None  # no key, or the deployment's shared one (server.apis.openai checks that)
    found = await request.app[STORE].api_key_person(digest(token))
    if found is None:
        message = "This API key is not valid: it was revoked, or never issued. Ask for a new one (h2ochat keys create)"
        body: dict[str, object] = {"message": message}
        if route_path(request).startswith("/v1"):  # OpenAI's shape there, as its SDK expects
            body = {
                "error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
            }
        raise ApiError(401, message, body=body)
    person, session, key_id = found
    request[API_KEY_ID] = key_id
    return person, session


async def _by_header(request: web.Request) -> tuple[Person, Session] | None:
    config = request.app[CONFIG]
    header = config.trusted_user_header
    if header is None or header not in request.headers:
        return None
    remote = request.remote or ""
    if not address_in(remote, config.forwarded_allow_ips):
        _warn_once(request.app, remote, header)
        return None
    login = request.headers[header].strip().lower()
    if not LOGIN.fullmatch(login):
        raise ApiError(
            400,
            f"The {header} header from the proxy is not a login this server takes ({printable(login[:80])!r}): "
            "it must be 1 to 254 characters without spaces; check the proxy's configuration",
        )
    name = ""
    if config.trusted_name_header is not None:
        name = _CONTROL.sub("", request.headers.get(config.trusted_name_header, "")).strip()[:MAX_NAME]
    return await request.app[STORE].person_session(login, name)


def _warn_once(app: web.Application, remote: str, header: str) -> None:
    warned = app[WARNED]
    if remote in warned or len(warned) >= _WARNED_MAX:
        return
    warned.add(remote)
    log.warning(
        "a request from %s carried %s, but that address is not in forwarded_allow_ips: the header was ignored "
        "(a client may be reaching the server around its proxy)",
        printable(remote),
        header,
    )
