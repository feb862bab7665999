"""What every API of the server shares: the app keys, refusals as JSON, request bodies.

The chat-ui routes, the OpenAI API and the TGI API import from here and
never from each other. Each words a refusal in its own shape through
:class:`ApiError`'s ``body``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, TypeVar

import msgspec
from aiohttp import web

from h2ochat.protocol.nesting import MAX_JSON_DEPTH, too_deep
from h2ochat.server.config import ServerConfig
from h2ochat.server.inference.runtime import Models
from h2ochat.server.storage import Session, Store
from h2ochat.server.storage.people import Person

__all__ = [
    "API_KEY_ID",
    "CONFIG",
    "DEVICE",
    "DeviceCookie",
    "MODELS",
    "PERSON",
    "SESSION",
    "SESSION_FOUND",
    "STORE",
    "ApiError",
    "BadBody",
    "limit_rate",
    "decode_body",
    "describe_http_error",
    "json_response",
    "parse_json",
    "route_path",
]

T = TypeVar("T")


class ApiError(Exception):
    """A refusal: HTTP status and a message for the client, as ``{"message": …}``.

    ``body`` replaces the whole JSON body, for gates (``{"error": …}``) and the
    APIs with an error shape of their own (OpenAI, TGI).
    """

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.headers = headers
        self.body = body if body is not None else {"message": message}


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(payload), status=status, content_type="application/json", headers=headers
    )


class BadBody(ValueError):
    """A request body that is not the JSON an endpoint expects; the message says how."""


def parse_json(raw: bytes, kind: type[T]) -> T:
    """Decode a request body for every API alike; each API words a :class:`BadBody` in its own shape."""
    if too_deep(raw):  # the same limit on every Python, rather than whichever recursion limit it has
        raise BadBody(f"The request body is JSON nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise BadBody(f"Invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadBody(f"The request body must be JSON: {exc}") from None
    except UnicodeDecodeError:  # msgspec's answer to invalid UTF-8 inside a string
        raise BadBody("The request body must be UTF-8: it holds bytes that are not") from None


def decode_body(raw: bytes, kind: type[T]) -> T:
    """:func:`parse_json` with the chat protocol's 400."""
    try:
        return parse_json(raw, kind)
    except BadBody as exc:
        raise ApiError(400, str(exc)) from None


def route_path(request: web.Request) -> str:
    """The request's path below the server's ``base_path``: what the routes are named by (``/settings``).

    Middlewares that single out routes by path use this, so that they hold with any prefix.
    """
    base = request.app[CONFIG].base_path
    path = request.path
    if base and (path == base or path.startswith(base + "/")):
        return path[len(base) :] or "/"
    return path


def describe_http_error(exc: web.HTTPException, request: web.Request) -> str:
    """What aiohttp's own refusals (no route, wrong method, body too large) mean, in words."""
    if isinstance(exc, web.HTTPNotFound):
        return f"No such endpoint: {request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"Method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"The request body is too large; this server accepts at most {request.app[CONFIG].max_body_bytes} bytes"
    return exc.reason or exc.text or f"HTTP {exc.status}"


async def limit_rate(store: Store, bucket: str, per_minute: int, what: str) -> None:
    """Count one ``what`` in ``bucket`` against ``per_minute`` (0: no limit), or refuse with a 429.

    Counted in the database, so every replica shares the count and memory stays bounded.
    """
    if not per_minute:
        return
    wait = await store.admit(bucket, per_minute)
    if wait:
        seconds = math.ceil(wait)
        raise ApiError(
            429,
            f"Too many {what}; try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


CONFIG = web.AppKey("config", ServerConfig)
STORE = web.AppKey("store", Store)
MODELS = web.AppKey("models", Models)
SESSION = web.RequestKey("session", str)


class DeviceCookie(NamedTuple):
    """A browser attached to its session as a device (storage/devices.py): its cookie is its secret."""

    id: str
    secret: str


DEVICE = web.RequestKey("device", DeviceCookie)  # unset: the cookie is the session's own id (its first device)
SESSION_FOUND = web.RequestKey("session_found", Session)  # the session as the request found it (unset: none)
PERSON = web.RequestKey("person", Person)  # who is asking (edge/people.py; unset: an anonymous session or none)
API_KEY_ID = web.RequestKey("api_key_id", str)  # the person's API key the request came with (unset: none)
