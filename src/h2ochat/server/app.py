"""The web application: sessions, gates, JSON errors, resources, and running it.

``create_app(config)`` builds the aiohttp application; ``start_server`` runs
it on a socket inside the current event loop (the command line and the tests
use it); ``serve`` runs it until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from h2ochat.server.apis.openai import routes as openai_routes
from h2ochat.server.apis.openai import v1_guard
from h2ochat.server.apis.tgi import routes as tgi_routes
from h2ochat.server.chatui.current_reads import routes as current_read_routes
from h2ochat.server.chatui.devices import routes as device_routes
from h2ochat.server.chatui.messages import routes as message_routes
from h2ochat.server.chatui.portability import routes as portability_routes
from h2ochat.server.chatui.reads import routes as read_routes
from h2ochat.server.chatui.reattach import routes as reattach_routes
from h2ochat.server.chatui.routes import routes
from h2ochat.server.chatui.runs import RUNS, RunRegistry
from h2ochat.server.chatui.shares import routes as share_routes
from h2ochat.server.chatui.web_search import routes as web_search_routes
from h2ochat.server.config import ServerConfig
from h2ochat.server.edge.guard import ConnectionGuard, guard_requests, listen
from h2ochat.server.edge.http import (
    CONFIG,
    DEVICE,
    MODELS,
    SESSION,
    SESSION_FOUND,
    STORE,
    ApiError,
    DeviceCookie,
    describe_http_error,
    json_response,
    limit_rate,
    route_path,
)
from h2ochat.server.edge.metrics import METRICS, Metrics, count_requests
from h2ochat.server.edge.metrics import routes as metrics_routes
from h2ochat.server.edge.security import (
    HOSTS,
    SAFE_METHODS,
    allowed_hosts,
    forwarded,
    printable,
    protect,
    public,
    security_headers,
)
from h2ochat.server.inference.runtime import Models
from h2ochat.server.storage import (
    ConversationGone,
    MessageIdTaken,
    RunIdTaken,
    Session,
    SessionGone,
    Store,
    StoreError,
    StoreOptions,
    StoreUnavailable,
    TooManyConversations,
    TooManyMessages,
    TooManyRunning,
    open_store,
)
from h2ochat.server.storage.devices import DEVICE_SECRET
from h2ochat.server.web.page import routes as page_routes
from h2ochat.server.web.shared import routes as shared_page_routes

# Every route of the server, served under config.base_path by _add_routes: a new table goes here.
ROUTE_TABLES: tuple[web.RouteTableDef, ...] = (
    routes,
    message_routes,
    read_routes,
    current_read_routes,
    reattach_routes,
    openai_routes,
    tgi_routes,
    page_routes,  # the web chat page at / (server/web/page.py)
    share_routes,  # shared links, for their owner (server/chatui/shares.py)
    web_search_routes,  # web search before an answer (server/chatui/web_search.py)
    shared_page_routes,  # a shared conversation's page at /r/<id> (server/web/shared.py)
    portability_routes,  # export everything and import (server/chatui/portability.py)
    device_routes,  # one history in several browsers (server/chatui/devices.py)
    metrics_routes,  # GET /metrics for Prometheus, when metrics = true (server/edge/metrics.py)
)

__all__ = ["RunningServer", "create_app", "serve", "start_server"]

log = logging.getLogger("h2ochat.server")

COOKIE = "hf-chat"
# Writes that may start a session: 2023's, today's settings (a current client's first POST may be it), and an
# import (a fresh browser brings its history).
_WRITES = ("/settings", "/conversation", "/api/v2/user/settings", "/api/import")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UPKEEP_INTERVAL = 5.0  # seconds between rounds of the store's background work (leases, expiry)
_CHECKED_IN_STATEMENT = (("POST", "/conversation"), ("DELETE", "/conversation/{id}"))  # see _checked_in_statement
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what the server issues (and the UUIDs it used to)
MAX_COOKIES = 4  # hf-chat values looked up per request; more and none is trusted
_AMBIGUOUS = (
    "This request carries hf-chat cookies of more than one session (or more than {max} of them), so it is "
    "served under none: another site on this domain may have set some. Delete this site's cookies "
    "(and its parent domain's) and reload to start a new session."
)
# What the store's refusals mean in HTTP; the message is the error's own.
_STORE_STATUS: dict[type[StoreError], int] = {
    StoreUnavailable: 503,
    SessionGone: 401,  # only if a session ended between the lookup and the step
    ConversationGone: 404,
    MessageIdTaken: 409,
    TooManyConversations: 409,
    TooManyMessages: 409,
    TooManyRunning: 429,
    RunIdTaken: 409,
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON body that says what was wrong; never a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body, exc.status, exc.headers)
    except StoreError as exc:
        status = _STORE_STATUS.get(type(exc), 500)
        if status >= 500 and METRICS in request.app:
            request.app[METRICS].database_errors.labels(type(exc).__name__).inc()
        return json_response({"message": str(exc)}, status, {"Retry-After": "5"} if status == 503 else None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"message": describe_http_error(exc, request)}, exc.status, _allow_header(exc))
    except asyncio.CancelledError:
        raise
    except ConnectionError:  # the client left while sending its request: normal, not a server fault
        log.info("client left during %s %s", request.method, printable(request.path))
        return json_response({"message": "The request ended before its body did"}, 400)
    except Exception:
        log.exception("unexpected error handling %s %s", request.method, printable(request.path))
        return json_response({"message": "Internal server error; the server log has the details"}, 500)


def _allow_header(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


@web.middleware
async def outside_base(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a ``base_path``, nothing exists outside it: a 404 that says where the app lives, before any
    session, key or gate is looked at."""
    base = request.app[CONFIG].base_path
    if base and not (request.path == base or request.path.startswith(base + "/")):
        raise ApiError(
            404,
            f"No such endpoint: {request.method} {request.path}; this server serves everything under "
            f"{base} (its base_path): the page is at {base}/, the API under {base}/api, {base}/v1 and so on",
        )
    return await handler(request)


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
    path = route_path(request)
    writes = request.method not in SAFE_METHODS and path.startswith(_WRITES)
    if ambiguous and writes:
        # No new session either: its cookie would replace the person's own in the browser.
        raise ApiError(400, _AMBIGUOUS.format(max=MAX_COOKIES))
    if config.welcome_gate and _is_2023_message(request) and (session is None or session.ethics_accepted_at is None):
        message = "You need to accept the welcome modal first"
        raise ApiError(405, message, body={"error": message})
    if session is None and writes:
        what = f"new sessions: this server accepts {config.new_sessions_per_minute} per minute per client address"
        await limit_rate(store, f"sessions:{request.remote}", config.new_sessions_per_minute, what)
        # The settings step stores its new session together with the settings (Store.save_settings):
        # one statement, not two.
        if (request.method, path) != ("POST", "/settings"):
            request[SESSION] = await store.new_session()


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


async def _set_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Issue or refresh the session cookie on every response.

    Written as a header: by the time this hook runs, aiohttp (3.14) has
    already turned ``response.set_cookie`` values into headers.
    """
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


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, duration."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = printable(request.path)  # decoded: %0a would otherwise start a forged line
        self.logger.info("%s %s %s %.1fms", printable(request.method), path, response.status, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def create_app(config: ServerConfig) -> web.Application:
    """The application: the chat-ui protocol, the OpenAI-compatible ``/v1`` API and the TGI API.

    The database and the models open on startup and close on cleanup.
    """
    # The guard first: a request refused by a later one must still end the guard's head timer.
    middlewares = [guard_requests, count_requests, forwarded, json_errors, outside_base, v1_guard, protect, sessions]
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=middlewares)
    app[CONFIG] = config
    if config.metrics:
        app[METRICS] = Metrics(app)
    app[HOSTS] = allowed_hosts(config)
    if app[HOSTS] is None:
        log.warning(
            "answering requests for any host name (bound to %s): set allowed_hosts (--allowed-hosts) to the "
            "names people use, so that a hostile name pointed at this address (DNS rebinding) is refused",
            config.host,
        )
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_models)
    app.cleanup_ctx.append(_upkeep)
    app.on_response_prepare.append(_set_cookie)
    app.on_response_prepare.append(security_headers)
    app.on_shutdown.append(_stop_generations)
    for table in ROUTE_TABLES:
        _add_routes(app, table, config.base_path)
    return app


def _add_routes(app: web.Application, table: web.RouteTableDef, base: str) -> None:
    """The table's routes under ``base``; ``/`` becomes both ``/chat`` and ``/chat/``, as a proxy or a
    client (the TGI one posts to its base URL) may ask for either.

    Prefixed at registration rather than by a sub-application: the routes and middlewares then see
    one application, and aiohttp's router matches the full path with no rewriting.
    """
    for route in table:
        if not isinstance(route, web.RouteDef):  # a static directory would need its own prefixing
            raise TypeError(f"only plain routes can be served under a base path, not {route!r}")
        paths = [base, base + "/"] if base and route.path == "/" else [base + route.path]
        for path in paths:
            web.RouteDef(route.method, path, route.handler, route.kwargs).register(app.router)  # GET: HEAD too


def store_options(config: ServerConfig) -> StoreOptions:
    """The store's options from the server's settings (the server's, and the command line's own use of
    the database: ``h2ochat export/import`` without a server)."""
    return StoreOptions(
        pool_size=config.db_pool_size,
        session_idle=config.session_idle_days * 86400,
        orphan_ttl=config.orphan_ttl,
        run_log_keep=config.run_log_keep,
        preprompts={model.name: model.preprompt for model in config.models},
    )


async def _store(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    app[STORE] = await open_store(config.db_path(), store_options(config))
    yield
    await app[STORE].close()


async def _models(app: web.Application) -> AsyncIterator[None]:
    models = Models(app[CONFIG].models)
    app[MODELS] = models
    app[STORE].on_stop(models.stop_conversation)  # stop requests from any replica reach this one's generations
    app[RUNS] = RunRegistry()
    app[STORE].on_run_events(app[RUNS].notified)  # readers here of runs generated elsewhere
    try:
        await models.start()
        yield
    finally:
        await models.close()


async def _upkeep(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_upkeep_rounds(app[STORE]))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _upkeep_rounds(store: Store) -> None:
    """The store's background work, every few seconds, for as long as the server runs."""
    while True:
        await asyncio.sleep(UPKEEP_INTERVAL)
        try:
            await store.upkeep()
        except StoreUnavailable:
            pass  # logged by the store; the next round tries again
        except Exception:
            log.exception("the database's background upkeep failed")


async def _stop_generations(app: web.Application) -> None:
    # Runs before aiohttp waits for the handlers: each open stream ends with an
    # error event and its partial answer is saved, instead of being cut.
    app[MODELS].stop_all("the server is shutting down")
    await app[RUNS].wait(app[CONFIG].shutdown_timeout)  # the runs' answers and logs saved before the store closes


@dataclass
class RunningServer:
    url: str  # where the application lives: the base_path included
    runner: web.AppRunner

    @property
    def app(self) -> web.Application:
        return self.runner.app

    async def close(self) -> None:
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def start_server(config: ServerConfig) -> AsyncIterator[RunningServer]:
    """Run the server in the current event loop until the block ends (port 0: any free port)."""
    runner = web.AppRunner(
        create_app(config),
        access_log_class=AccessLogger,
        handle_signals=False,
        shutdown_timeout=config.shutdown_timeout,
        keepalive_timeout=config.keepalive_timeout,
    )
    guard: ConnectionGuard | None = None
    try:
        await runner.setup()  # inside: a failed startup still closes what started (the store) below
        assert runner.server is not None
        async with listen(runner.server, config) as guard:
            host, port = _bound_address(guard.listeners, config)
            yield RunningServer(f"http://{host}:{port}{config.base_path}", runner)
    finally:
        await _shut_down(runner, guard, config.shutdown_timeout)


async def _shut_down(runner: web.AppRunner, guard: ConnectionGuard | None, timeout: float) -> None:
    """aiohttp's shutdown, then what it left: connections whose clients stopped reading.

    aiohttp waits for each answer to drain into its client (``timeout``, then as long again), and its
    close waits for that too; a client that never reads would hold both for good. So every connection
    still open ``timeout`` seconds in is dropped, and any left at the end.
    """
    drop_late = asyncio.get_running_loop().call_later(timeout, guard.drop_all) if guard is not None else None
    try:
        await runner.cleanup()
    finally:
        if drop_late is not None:
            drop_late.cancel()
    if guard is not None:
        guard.drop_all()
        await asyncio.sleep(0)  # their connection_lost, on the next turn of the loop


def _bound_address(listeners: list[socket.socket], config: ServerConfig) -> tuple[str, int]:
    port = listeners[0].getsockname()[1]  # port 0: only known once bound
    host = config.host if ":" not in config.host else f"[{config.host}]"
    return host, port


async def serve(config: ServerConfig, ready: Callable[[str], None] | None = None) -> None:
    """Run until SIGINT or SIGTERM, then shut down cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows
            loop.add_signal_handler(signum, stop.set)
    async with start_server(config) as server:
        if ready is not None:
            ready(server.url)
        await stop.wait()
        log.info("shutting down")
