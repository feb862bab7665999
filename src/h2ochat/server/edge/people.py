"""Who is asking, as the deployment's identity proxy says (README "People: sign-in for teams").

With ``trusted_user_header`` set (``X-Forwarded-Email`` from oauth2-proxy, ``Remote-User`` from
Authelia, ``Tailscale-User-Login``), a request from one of ``forwarded_allow_ips`` that carries the
header is the person it names, served under that person's session whatever its cookies say. From any
other address the header is a client's own words: ignored, and a warning logged once per address.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from h2ochat.server.edge.http import CONFIG, STORE, ApiError
from h2ochat.server.edge.security import address_in, printable
from h2ochat.server.storage import Session
from h2ochat.server.storage.people import Person

__all__ = ["WARNED", "person_of"]

log = logging.getLogger("h2ochat.server")

_LOGIN = re.compile(r"[^\s\x00-\x1f\x7f]{1,254}")  # an e-mail address (254 at most) or a user name
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 200
_WARNED_MAX = 1000  # addresses remembered for the once-per-address warning; then no more warnings
# Addresses already warned about (create_app sets it: an application's state is fixed once it runs).
WARNED = web.AppKey("people_warned", set[str])


async def person_of(request: web.Request) -> tuple[Person, Session] | None:
    """The person the trusted proxy names, with their session; None when there is none to believe."""
    config = request.app[CONFIG]
    header = config.trusted_user_header
    if header is None or header not in request.headers:
        return None
    remote = request.remote or ""
    if not address_in(remote, config.forwarded_allow_ips):
        _warn_once(request.app, remote, header)
        return None
    login = request.headers[header].strip().lower()
    if not _LOGIN.fullmatch(login):
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
