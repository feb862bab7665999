"""The hf-chat session of every request, and the welcome gate (docs/protocol.md, "Sessions").

A cookie counts only if it names a live session the server issued (or a
device's secret, section 17); a write without one gets a new session, a read
none. The cookie is (re)issued on every response that has a session.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from h2ochat.server.edge.http import (
    CONFIG,
    DEVICE,
    PERSON,
    SESSION,
    SESSION_FOUND,
    STORE,
    ApiError,
    DeviceCookie,
    limit_rate,
    route_path,
)
from h2ochat.server.edge.security import SAFE_METHODS, public
from h2ochat.server.storage import Session, Store
from h2ochat.server.storage.devices import DEVICE_SECRET

__all__ = ["COOKIE", "MAX_COOKIES", "sessions", "set_cookie"]

log = logging.getLogger("h2ochat.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "hf-chat"
# Writes that may start a session: 2023's, today's settings (a current client's first POST may be it), and an
# import (a fresh browser brings its history).
_WRITES = ("/settings", "/conversation", "/api/v2/user/settings", "/api/import")
_CHECKED_IN_STATEMENT = (("POST", "/conversation"), ("DELETE", "/conversation/{id}"))  # see _checked_in_statement
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what the server issues (and the UUIDs it used to)
MAX_COOKIES = 4  # hf-chat values looked up per request; more and none is trusted
_AMBIGUOUS = (
    "This request carries hf-chat cookies of more than one session (or more than {max} of them), so it is "
    "served under none: another site on this domain may have set some. Delete this site's cookies "
    "(and its parent domain's) and reload to start a new session."
)


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The hf-chat session and the welcome gate (docs/protocol.md, "Sessions").

    Sessions are the server's: a cookie counts only if it names a live session the server issued.
    Without one, a request that writes to the chat protocol gets a new session (at most
    ``new_sessions_per_minute`` per client address); a read gets none (and no cookie). Cookies
    that are ambiguous (:func:`_cookie_session`) give a read no session and refuse a write.

    A step whose own first statement checks the session (:func:`_checked_in_statement`) is not preceded
    by a lookup when the request names one session: a round trip saved on every chat step (issue 20).
    If such a step refuses, for whatever reason, the session is looked up as for any other request, and
    only if it was not live is the step taken again, as a request without it would be; so every answer
    stays what the lookup first would have given.
    """
    if PERSON in request:  # a person (edge/people.py): their session, whatever the cookies say
        _welcome_gate(request, request[SESSION_FOUND])
        return await handler(request)
    candidate = _lone_cookie(request) if _checked_in_statement(request) else None
    if candidate is None:
        await _look_up_session(request)
        return await handler(request)
    request[SESSION] = candidate
    try:
        return await handler(request)
    except Exception as exc:
        refused = exc
    await _look_up_session(request)  # raises the welcome gate's refusal, or issues a new session
    if request[SESSION] == candidate:
        raise refused  # the session was live: the refusal was the step's own
    return await handler(request)


async def _look_up_session(request: web.Request) -> None:
    """Set the request's session from its cookies, refusing or issuing one as :func:`sessions` says."""
    store, config = request.app[STORE], request.app[CONFIG]
    session, ambiguous = await _cookie_session(request, store)
    request[SESSION] = session.id if session is not None else ""
    if session is not None:
        request[SESSION_FOUND] = session
        if DEVICE in request and config.sign_in:  # a browser signed in is a device of its person's session
            person = await store.session_person(session.id)
            if person is not None:
                request[PERSON] = person
    path = route_path(request)
    writes = request.method not in SAFE_METHODS and path.startswith(_WRITES)
    if ambiguous and writes:
        # No new session either: its cookie would replace the person's own in the browser.
        raise ApiError(400, _AMBIGUOUS.format(max=MAX_COOKIES))
    _welcome_gate(request, session)
    if session is None and writes:
        what = f"new sessions: this server accepts {config.new_sessions_per_minute} per minute per client address"
        await limit_rate(store, f"sessions:{request.remote}", config.new_sessions_per_minute, what)
        # The settings step stores its new session together with the settings (Store.save_settings):
        # one statement, not two.
        if (request.method, path) != ("POST", "/settings"):
            request[SESSION] = await store.new_session()


def _welcome_gate(request: web.Request, session: Session | None) -> None:
    """2023's messages wait for the welcome modal to be accepted (its settings step)."""
    gated = request.app[CONFIG].welcome_gate and _is_2023_message(request)
    if gated and (session is None or session.ethics_accepted_at is None):
        message = "You need to accept the welcome modal first"
        raise ApiError(405, message, body={"error": message})


def _checked_in_statement(request: web.Request) -> bool:
    """Whether the request's step checks the session in its first statement, before anything is written
    (create: ``Store.create_conversation``; a message of 2023: ``conversation_with_messages`` with the
    welcome gate; delete: ``delete_conversation``), and reads nothing a second try could not read again
    (today's multipart message is read as a stream, so it is looked up first)."""
    resource = request.match_info.route.resource
    if resource is None:
        return False
    route = (request.method, resource.canonical.removeprefix(request.app[CONFIG].base_path))
    return route in _CHECKED_IN_STATEMENT or _is_2023_message(request)


def _lone_cookie(request: web.Request) -> str | None:
    """The request's hf-chat value when it sends exactly one, of the shape the server issues."""
    values = _cookie_values(request)
    # A device's secret is looked up first (its session id is not its cookie).
    lone = len(values) == 1 and _SESSION_ID.fullmatch(values[0]) and not DEVICE_SECRET.fullmatch(values[0])
    return values[0] if lone else None


def _is_2023_message(request: web.Request) -> bool:
    """The request the welcome gate guards: 2023's message post (JSON). chat-ui of today has no gate
    (its clients send no acceptance), so its multipart message and every other request pass; the
    gate still keeps anyone from chatting through the 2023 protocol before the settings step."""
    return (
        request.method == "POST"
        and request.match_info.route.resource is not None
        and request.match_info.route.resource.canonical.endswith("/conversation/{id}")
        and not request.content_type.startswith("multipart/")
    )


async def _cookie_session(request: web.Request, store: Store) -> tuple[Session | None, bool]:
    """The live session the request's hf-chat cookies name, if exactly one of them names one; and
    whether they were ambiguous (several live sessions, or too many cookies to look up).

    Two hf-chat cookies arrive when one was planted from a sibling host (``Domain=.example.com``) or
    for a narrower path; browsers send the narrower path first, so "the first" would let a planted
    cookie win. When several cookies name different live sessions, none is trusted, so a planted
    session never receives the victim's messages. The lookups are bounded, and a request with more
    cookies than that trusts none: checking only the first few would let junk values in front push
    the victim's cookie out of sight, leaving the planted one the only live session seen.
    """
    values = _cookie_values(request)
    if len(values) > MAX_COOKIES:
        log.warning("a request carried %d hf-chat cookies, more than %d; none is used", len(values), MAX_COOKIES)
        return None, True
    found: Session | None = None
    for value in values:
        session = await _value_session(request, store, value, first=found is None)
        if session is not None and found is not None and session.id != found.id:
            log.warning("a request carried hf-chat cookies of two different sessions; neither is used")
            request.pop(DEVICE, None)
            return None, True
        found = found or session
    return found, False


async def _value_session(request: web.Request, store: Store, value: str, *, first: bool) -> Session | None:
    """The live session one hf-chat value names: a session's own id, or a device's secret (section 17),
    which the request then keeps (``DEVICE``) so that its cookie stays the device's."""
    if DEVICE_SECRET.fullmatch(value):
        found = await store.device_session(value)
        if found is None:
            return None
        if first:
            request[DEVICE] = DeviceCookie(found[1], value)
        return found[0]
    return await store.session(value) if _SESSION_ID.fullmatch(value) else None


def _cookie_values(request: web.Request) -> list[str]:
    """Every hf-chat value in the Cookie headers, in the order sent, without repeats."""
    values: list[str] = []
    for header in request.headers.getall("Cookie", []):
        for pair in header.split(";"):
            name, _, value = pair.strip().partition("=")
            if name == COOKIE and value.strip('"') not in values:
                values.append(value.strip('"'))
    return values


async def set_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Issue or refresh the session cookie on every response.

    Written as a header: by the time this hook runs, aiohttp (3.14) has
    already turned ``response.set_cookie`` values into headers.
    """
    if PERSON in request and DEVICE not in request:  # named by the proxy or a key each time: no cookie
        return
    session = request.get(SESSION)
    device = request.get(DEVICE)
    if session and device is not None:
        session = device.secret  # a device's cookie is its own secret, never the session's id
    if session:  # a read without a session gets none
        secure = "; Secure" if public(request).scheme == "https" else ""
        config = request.app[CONFIG]
        max_age = int(config.session_idle_days * 86400)
        path = config.base_path or "/"  # another application on the same host never receives it
        response.headers.add(
            "Set-Cookie", f"{COOKIE}={session}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
        )
