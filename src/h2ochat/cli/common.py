"""What the commands share: connecting (to a URL or the embedded model), options, errors.

No protocol logic lives here: everything goes through the public client API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click
from click.shell_completion import CompletionItem
from rich.console import Console

from h2ochat.protocol.errors import H2oChatError
from h2ochat.protocol.nesting import MAX_JSON_DEPTH, too_deep
from h2ochat.providers.defaults import configured_model, configured_url
from h2ochat.providers.session import H2oSession

__all__ = [
    "CONFIG_OPTION",
    "DB_OPTION",
    "Connection",
    "complete_model",
    "connect",
    "fail",
    "local_store",
    "parse_parameters",
    "run",
    "stderr",
]

T = TypeVar("T")
stderr = Console(stderr=True, highlight=False)

EMBEDDED_NOTE = (
    "Using the embedded model {model} (no --url or H2OCHAT_URL given). "
    "Point elsewhere with --url http://host:port or H2OCHAT_URL."
)


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear red line on stderr, then exit (1: server or protocol failure, 2: usage)."""
    stderr.print(f"[bold red]Error:[/] {message}", markup=True, soft_wrap=True)
    raise SystemExit(code)


def run(main: Callable[[], Coroutine[Any, Any, T]], debug: bool) -> T:
    """Run a command's coroutine and turn h2ochat's errors into one line and an exit code."""
    from h2ochat.server.config import ConfigError
    from h2ochat.server.storage import StoreError

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        stderr.print("[dim]Interrupted.[/]")
        raise SystemExit(130) from None
    except (H2oChatError, ConfigError, StoreError, OSError, ValueError) as exc:
        if debug:
            raise
        code = 2 if isinstance(exc, ValueError) and not isinstance(exc, ConfigError) else 1
        fail(str(exc) or type(exc).__name__, code)
    except Exception as exc:
        if debug:
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")


def parse_parameters(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``-p key=value`` options; values are JSON where they parse (numbers, true, lists), else text."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value (example: -p temperature=0.2)", param_hint="-p")
        if too_deep(value):  # json.loads would recurse past the interpreter's limit before 3.13
            raise click.BadParameter(f"{key.strip()}: JSON nested more than {MAX_JSON_DEPTH} levels", param_hint="-p")
        try:
            parameters[key.strip()] = json.loads(value)
        except ValueError:
            parameters[key.strip()] = value
    return parameters


@dataclass
class Connection:
    """A session (which puts -p values over the server's recommended parameters) and the model chosen."""

    session: H2oSession
    model: str | None


@contextlib.asynccontextmanager
async def connect(
    url: str | None, proxy: str | None, model: str | None, announce: bool = True, protocol: str = "auto"
) -> AsyncIterator[Connection]:
    """A session to ``url``, or to the embedded server started here when no server is configured.

    ``protocol`` is the generation to speak (``auto``: the session asks the server once).
    """
    url, model = configured_url(url), configured_model(model)
    if url is not None:
        async with H2oSession(url, proxy=proxy, protocol=protocol) as session:
            yield Connection(session, await _chosen_model(session, model))
        return
    from h2ochat.server import ServerConfig, start_server

    async with contextlib.AsyncExitStack() as stack:
        # Loading the model takes seconds (more for a large one): say so rather than sit silent.
        showing = announce and stderr.is_terminal
        with stderr.status("Loading the embedded model…") if showing else contextlib.nullcontext():
            server = await stack.enter_async_context(start_server(ServerConfig(port=0, db=":memory:")))
        session = await stack.enter_async_context(H2oSession(server.url, protocol=protocol))
        chosen = await _chosen_model(session, model)
        if announce:
            stderr.print(f"[dim]{EMBEDDED_NOTE.format(model=chosen)}[/]")
        yield Connection(session, chosen)


async def _chosen_model(session: H2oSession, model: str | None) -> str | None:
    """The model asked for, else the server's first; None for a server that does not list its models.

    The session keeps the list, and takes the model's recommended parameters from it.
    """
    if model is not None:
        return model
    try:
        models = await session.models()
    except H2oChatError:
        return None
    return str(models[0].get("id")) if models else None


def complete_model(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of --model: the models of the server --url (or H2OCHAT_URL) names.

    Without a server it offers the embedded model rather than load it: completion must be quick.
    """
    from h2ochat.server.config import DEFAULT_MODEL_ID

    url = configured_url(ctx.params.get("url"))
    if url is None:
        names = [DEFAULT_MODEL_ID]
    else:
        try:
            names = asyncio.run(_model_names(url, ctx.params.get("proxy")))
        except (H2oChatError, OSError, ValueError):
            return []  # no completion beats a traceback in the middle of the command line
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


async def _model_names(url: str, proxy: str | None) -> list[str]:
    async with H2oSession(url, proxy=proxy, timeout=3, max_retries=0, prefetch=False) as session:
        return [str(model.get("id")) for model in await session.models()]


def stdin_text() -> str:
    """A question piped on stdin, without the line break that ``echo`` adds."""
    if sys.stdin.isatty():
        return ""
    return sys.stdin.read().strip()


CONFIG_OPTION = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="The server's TOML file.")
DB_OPTION = click.option(
    "--db", envvar="H2OCHAT_DB", help="The server's database, as h2ochat serve --db (env H2OCHAT_DB)."
)


async def local_store(config_path: str | None, db: str | None) -> tuple[Any, Any]:
    """The server's store and settings, opened as ``h2ochat serve`` would open them (for commands that
    work on the database itself, with or without a server running)."""
    from h2ochat.server import load_config
    from h2ochat.server.app import store_options
    from h2ochat.server.storage import open_store

    overrides: dict[str, Any] = {"db": db} if db else {}
    config = load_config(config_path, **overrides)
    return await open_store(config.db_path(), store_options(config)), config
