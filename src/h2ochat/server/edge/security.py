"""What makes the server safe to face the open internet: proxies, Host names, cross-site requests.

- **Forwarded headers**: behind a TLS-terminating proxy the request reaches us
  as plain http from the proxy's address. ``X-Forwarded-Proto`` and
  ``X-Forwarded-Host`` are believed only from the addresses in
  ``forwarded_allow_ips``, so that cookies get ``Secure`` and the same-origin
  checks compare against the address the browser used.
- **Host**: a request for a name this server does not answer to is refused,
  which defeats DNS rebinding (a hostile name pointed at 127.0.0.1).
- **Cross-site requests**: a state-changing request is accepted when it sends
  ``Content-Type: application/json`` (or a zip, for an import: a browser preflights those across
  origins, and the preflight fails here), or, with a form body or no body, a
  same-origin ``Origin`` or ``Referer``. A cross-origin ``Origin`` is refused
  whatever the type. Clients that are not browsers send JSON, or the Referer
  chat-ui's protocol always asked for, and are not affected.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from aiohttp import web
from yarl import URL

from h2ochat.server.config import ServerConfig
from h2ochat.server.edge.http import CONFIG, ApiError, route_path

__all__ = [
    "address_in",
    "allowed_hosts",
    "check_cross_site",
    "forwarded",
    "host_allowed",
    "PUBLIC",
    "Public",
    "printable",
    "public",
    "protect",
    "same_origin",
    "security_headers",
]

log = logging.getLogger("h2ochat.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A file POST /api/import takes as it is (a zip, or bytes): like JSON, a browser sends these across
# origins only after a preflight, which fails here. Elsewhere they stay refused (JSON is asked for).
FILE_TYPES = frozenset({"application/zip", "application/octet-stream"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` safe for a log line: control characters escaped, so a request cannot forge a line."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def allowed_hosts(config: ServerConfig) -> list[str] | None:
    """The Host names answered: as configured, else the loopback names when bound to loopback,
    else any (None), which the server warns about at start."""
    if config.allowed_hosts is not None:
        return config.allowed_hosts
    try:
        address = ipaddress.ip_address(config.host.strip("[]"))
    except ValueError:
        return None if config.host in ("", "*") else [_bracketed(config.host), *_LOOPBACK_NAMES]
    if address.is_loopback:
        return _LOOPBACK_NAMES
    if address.is_unspecified:
        return None
    return [_bracketed(config.host)]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_allowed(host: str, allowed: list[str] | None) -> bool:
    """Whether ``host`` (a Host header, port included or not) is one of ``allowed``:
    exact names, ``*`` for any, ``.example.com`` for that domain and its subdomains."""
    if allowed is None or "*" in allowed:
        return True
    name = host.lower()
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    for pattern in allowed:
        pattern = pattern.lower()
        if name == pattern or (pattern.startswith(".") and (name.endswith(pattern) or name == pattern[1:])):
            return True
    return False


class Public(NamedTuple):
    """The scheme and host the client used: the request's own, or a trusted proxy's word for them."""

    scheme: str
    host: str


PUBLIC = web.RequestKey("public", Public)


def public(request: web.Request) -> Public:
    return request.get(PUBLIC) or Public(request.scheme, request.host)


@web.middleware
async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Believe X-Forwarded-Proto and X-Forwarded-Host from the configured proxies only.

    Kept in the request's state rather than a ``request.clone()``: aiohttp
    prepares a returned response with the original request, and the cookie's
    ``Secure`` must follow the forwarded scheme there too.
    """
    scheme, host = request.scheme, request.host
    trusted = request.app[CONFIG].forwarded_allow_ips
    if trusted and request.remote is not None and address_in(request.remote, trusted):
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        scheme = proto if proto in ("http", "https") else scheme
        host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip() or host
    request[PUBLIC] = Public(scheme, host)
    return await handler(request)


def address_in(remote: str, trusted: list[str]) -> bool:
    """Whether a peer's address is one of ``trusted`` (addresses, networks, or "*")."""
    if "*" in trusted:
        return True
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote in trusted  # a Unix socket's peer
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in trusted)


@web.middleware
async def protect(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The Host check on every request, and the cross-site check on those that change things."""
    allowed = request.app[HOSTS]
    host = public(request).host
    if not host_allowed(host, allowed):
        raise ApiError(
            400,
            f"This server does not answer to the host name {host!r}; "
            f"it answers to: {', '.join(allowed or [])} (the server's --allowed-hosts setting)",
        )
    check_cross_site(request)
    return await handler(request)


def check_cross_site(request: web.Request) -> None:
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is not None and not same_origin(origin, request):
        scheme, host = public(request)
        raise ApiError(403, f"Cross-origin request refused: Origin {origin} is not {scheme}://{host}")
    content_type = request.headers.get("Content-Type")
    if content_type is not None and request.content_type == "application/json":
        return  # browsers preflight JSON across origins
    if content_type is not None and request.content_type in FILE_TYPES and route_path(request) == "/api/import":
        return  # and these
    if request.body_exists and request.content_type not in FORM_TYPES:
        raise ApiError(
            415,
            "Send the body as JSON (Content-Type: application/json) or, to /settings, as a form "
            f"(application/x-www-form-urlencoded); got {content_type or 'no Content-Type'}",
        )
    if origin is not None:
        return  # same origin, checked above
    referer = request.headers.get("Referer")
    if not referer:
        raise ApiError(403, "Non-JSON form requests need to have a referer")
    if not same_origin(referer, request):
        raise ApiError(403, "Invalid referer for POST request")


def same_origin(address: str, request: web.Request) -> bool:
    try:
        url = URL(address)
    except (ValueError, TypeError):
        return False
    scheme, host = public(request)
    return url.scheme == scheme and url.raw_authority.lower() == host.lower()


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response; the web page sets a fuller Content-Security-Policy of its own."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")


HOSTS: web.AppKey[list[str] | None] = web.AppKey("allowed_hosts")
