"""The web application: sessions, gates, JSON errors, resources, and running it.

``create_app(config)`` builds the aiohttp application; ``start_server`` runs
it on a socket inside the current event loop (the command line and the tests
use it); ``serve`` runs it until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from h2ochat.server.config import ServerConfig
from h2ochat.server.generation import Models
from h2ochat.server.http import (
    CONFIG,
    LIMITER,
    MODELS,
    SESSION,
    STORE,
    ApiError,
    RateLimiter,
    describe_http_error,
    json_response,
)
from h2ochat.server.openai_api import routes as openai_routes
from h2ochat.server.openai_api import v1_guard
from h2ochat.server.routes import routes
from h2ochat.server.storage import open_store
from h2ochat.server.tgi_api import routes as tgi_routes

__all__ = ["RunningServer", "create_app", "serve", "start_server"]

log = logging.getLogger("h2ochat.server")

COOKIE = "hf-chat"
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON body that says what was wrong; never a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body, exc.status, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"message": describe_http_error(exc, request)}, exc.status, _allow_header(exc))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error handling %s %s", request.method, request.path)
        return json_response({"message": "Internal server error; the server log has the details"}, 500)


def _allow_header(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The hf-chat cookie, the Referer check on form posts and the welcome gate (docs/protocol.md, "Sessions")."""
    request[SESSION] = _session_id(request.cookies.get(COOKIE))
    if request.method == "POST" and request.content_type in _FORM_TYPES:
        referer = request.headers.get("Referer")
        if not referer:
            raise ApiError(403, "Non-JSON form requests need to have a referer")
        if not _same_origin(referer, request):
            raise ApiError(403, "Invalid referer for POST request")
    if (
        request.app[CONFIG].welcome_gate
        and request.method not in _SAFE_METHODS
        and request.path.startswith("/conversation")
    ):
        session = await request.app[STORE].session(request[SESSION])
        if session is None or session.ethics_accepted_at is None:
            message = "You need to accept the welcome modal first"
            raise ApiError(405, message, body={"error": message})
    return await handler(request)


def _session_id(cookie: str | None) -> str:
    if cookie:
        try:
            return str(uuid.UUID(cookie))
        except ValueError:
            pass  # not one of ours: start a new session
    return str(uuid.uuid4())


def _same_origin(referer: str, request: web.Request) -> bool:
    try:
        origin = URL(referer)
    except (ValueError, TypeError):
        return False
    return origin.scheme == request.scheme and origin.raw_authority == request.host


async def _set_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """Issue or refresh the session cookie on every response.

    Written as a header: by the time this hook runs, aiohttp (3.14) has
    already turned ``response.set_cookie`` values into headers.
    """
    session = request.get(SESSION)
    if session is not None:
        secure = "; Secure" if request.secure else ""
        response.headers.add(
            "Set-Cookie", f"{COOKIE}={session}; Path=/; Max-Age={365 * 86400}; HttpOnly; SameSite=Lax{secure}"
        )


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path, status, duration."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1fms", request.method, request.path, response.status, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def create_app(config: ServerConfig) -> web.Application:
    """The application: the chat-ui protocol, the OpenAI-compatible ``/v1`` API and the TGI API.

    The database and the models open on startup and close on cleanup.
    """
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[json_errors, v1_guard, sessions])
    app[CONFIG] = config
    app[LIMITER] = RateLimiter(config.rate_limit_per_minute)
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_models)
    app.on_response_prepare.append(_set_cookie)
    app.on_shutdown.append(_stop_generations)
    app.add_routes(routes)
    app.add_routes(openai_routes)
    app.add_routes(tgi_routes)
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    app[STORE] = await open_store(app[CONFIG].db_path())
    yield
    await app[STORE].close()


async def _models(app: web.Application) -> AsyncIterator[None]:
    models = Models(app[CONFIG].models)
    app[MODELS] = models
    try:
        await models.start()
        yield
    finally:
        await models.close()


async def _stop_generations(app: web.Application) -> None:
    # Runs before aiohttp waits for the handlers: each open stream ends with an
    # error event and its partial answer is saved, instead of being cut.
    app[MODELS].stop_all("the server is shutting down")


@dataclass
class RunningServer:
    url: str
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
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        host, port = _bound_address(site, config)
        yield RunningServer(f"http://{host}:{port}", runner)
    finally:
        await runner.cleanup()


def _bound_address(site: web.TCPSite, config: ServerConfig) -> tuple[str, int]:
    server = site._server  # aiohttp keeps the asyncio server here; the port is only known once bound
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else config.port
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
