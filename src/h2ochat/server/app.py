"""The web application: its middlewares in order, JSON errors, resources, and running it.

``create_app(config)`` builds the aiohttp application; ``start_server`` runs
it on a socket inside the current event loop (the command line and the tests
use it); ``serve`` runs it until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from h2ochat.server.apis.admin import routes as admin_routes
from h2ochat.server.apis.openai import routes as openai_routes
from h2ochat.server.apis.openai import v1_guard
from h2ochat.server.apis.tgi import routes as tgi_routes
from h2ochat.server.chatui.current_reads import routes as current_read_routes
from h2ochat.server.chatui.devices import routes as device_routes
from h2ochat.server.chatui.keys import routes as key_routes
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
    MODELS,
    STORE,
    ApiError,
    describe_http_error,
    json_response,
)
from h2ochat.server.edge.metrics import METRICS, Metrics, count_requests
from h2ochat.server.edge.metrics import routes as metrics_routes
from h2ochat.server.edge.people import WARNED, identify
from h2ochat.server.edge.security import (
    HOSTS,
    allowed_hosts,
    forwarded,
    printable,
    protect,
    security_headers,
)
from h2ochat.server.edge.sessions import sessions, set_cookie
from h2ochat.server.inference.runtime import Models
from h2ochat.server.storage import (
    ConversationGone,
    MessageIdTaken,
    RunIdTaken,
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
from h2ochat.server.web.login import PROVIDER
from h2ochat.server.web.login import routes as login_routes
from h2ochat.server.web.oidc import Provider
from h2ochat.server.web.page import routes as page_routes
from h2ochat.server.web.shared import routes as shared_page_routes
from h2ochat.server.web.usage import routes as usage_page_routes

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
    key_routes,  # a person's API keys (server/chatui/keys.py)
    admin_routes,  # every person's use, for the admins (server/apis/admin.py; its page: server/web/usage.py)
    usage_page_routes,
    login_routes,  # sign-in with OpenID Connect, when oidc_issuer is set (server/web/login.py)
    metrics_routes,  # GET /metrics for Prometheus, when metrics = true (server/edge/metrics.py)
)

__all__ = ["RunningServer", "create_app", "serve", "start_server"]

log = logging.getLogger("h2ochat.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UPKEEP_INTERVAL = 5.0  # seconds between rounds of the store's background work (leases, expiry)
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
    middlewares = [
        guard_requests,
        count_requests,
        forwarded,
        json_errors,
        outside_base,
        identify,
        v1_guard,
        protect,
        sessions,
    ]
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=middlewares)
    app[CONFIG] = config
    if config.metrics:
        app[METRICS] = Metrics(app)
    app[WARNED] = set()
    if config.oidc_issuer is not None and config.oidc_client_id is not None:
        app[PROVIDER] = Provider(config.oidc_issuer, config.oidc_client_id, config.oidc_scopes)
        app.on_cleanup.append(_close_provider)
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
    app.on_response_prepare.append(set_cookie)
    app.on_response_prepare.append(security_headers)
    app.on_shutdown.append(_stop_generations)
    for table in ROUTE_TABLES:
        _add_routes(app, table, config.base_path)
    return app


async def _close_provider(app: web.Application) -> None:
    await app[PROVIDER].close()


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
