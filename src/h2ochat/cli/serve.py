"""``h2ochat serve``: run the h2oGPT-compatible server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from h2ochat.cli.common import run, stderr

__all__ = ["serve"]


class _CommaList(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click stubs
    name = "LIST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[str]:
        return value if isinstance(value, list) else [part.strip() for part in str(value).split(",") if part.strip()]


_LIST = _CommaList()


@click.command()
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default 8080; 0 picks a free one).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file: [server] and [[models]].")
@click.option("--gguf", type=click.Path(dir_okay=False), help="Serve this GGUF file instead of the embedded model.")
@click.option("--parallel", type=click.IntRange(1, 64), help="Answers each llama model computes at once (default 8).")
@click.option("--hf", metavar="REPO[:QUANT]", help="Serve a GGUF model from the Hugging Face Hub, pulled on first use.")
@click.option(
    "--db",
    envvar="H2OCHAT_DB",
    help="SQLite file (default: h2ochat.db in the user data directory; ':memory:' keeps nothing), or "
    "postgresql://user:password@host:5432/dbname for several replicas on one database (env H2OCHAT_DB).",
)
@click.option("--db-pool-size", type=click.IntRange(1), help="PostgreSQL connections per replica (default 10).")
@click.option(
    "--tokens-per-day",
    type=click.IntRange(0),
    help="Tokens the models may generate per session (per person) and UTC day (default 0: no limit).",
)
@click.option(
    "--max-conversations", type=click.IntRange(0), help="Conversations a session may keep (default 1000; 0: any)."
)
@click.option(
    "--max-messages", type=click.IntRange(0), help="Messages a conversation may hold, every branch (default 1000)."
)
@click.option(
    "--new-sessions-per-minute",
    type=click.IntRange(0),
    help="New sessions per client address per minute (default 60; 0: any).",
)
@click.option(
    "--session-idle-days",
    type=click.FloatRange(0, min_open=True),
    help="Days after its last use a session expires, with its conversations (default 30).",
)
@click.option(
    "--welcome-gate/--no-welcome-gate", default=None, help="Require the settings step before chatting (default: on)."
)
@click.option(
    "--rate-limit", "rate_limit_per_minute", type=click.IntRange(0), help="Messages per minute per session (0: none)."
)
@click.option(
    "--max-new-tokens", "max_new_tokens_limit", type=click.IntRange(1), help="Ceiling on parameters.max_new_tokens."
)
@click.option("--max-input-chars", type=click.IntRange(1), help="Longest accepted inputs, in characters.")
@click.option("--max-body-bytes", type=click.IntRange(1024), help="Largest accepted request body.")
@click.option(
    "--header-timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds to send a request head (10)."
)
@click.option(
    "--body-timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds to send a request body (30)."
)
@click.option(
    "--keepalive-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds an idle connection stays open (75).",
)
@click.option(
    "--write-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a streaming client may take to read what was sent (30); then its answer ends as if it left.",
)
@click.option(
    "--max-connections", type=click.IntRange(1), help="Most open connections (1000); full: the oldest idle goes."
)
@click.option("--api-key", envvar="H2OCHAT_API_KEY", help="Bearer key required on /v1 (env H2OCHAT_API_KEY).")
@click.option("--tgi-model", help="The model behind the TGI API (/generate, /generate_stream); default: the first.")
@click.option(
    "--allowed-hosts",
    type=_LIST,
    help="Host names answered, comma-separated ('.example.com' with subdomains, '*' any). "
    "Default: the loopback names when bound to loopback, any when bound to all interfaces.",
)
@click.option(
    "--forwarded-allow-ips",
    type=_LIST,
    help="Proxies whose X-Forwarded-Proto/X-Forwarded-Host are believed, comma-separated addresses or networks.",
)
@click.option(
    "--trusted-user-header",
    help="The header an identity proxy names the person in (e.g. X-Forwarded-Email), believed only from "
    "--forwarded-allow-ips: each person gets one history in every browser (default: none, anonymous only).",
)
@click.option("--trusted-name-header", help="The proxy's header with the person's display name (optional).")
@click.option(
    "--oidc-issuer",
    help="Sign people in through this OpenID Connect provider (its issuer URL); with --oidc-client-id, and the "
    "client's secret in H2OCHAT_OIDC_CLIENT_SECRET.",
)
@click.option("--oidc-client-id", help="This server's client id at the --oidc-issuer provider.")
@click.option(
    "--metrics/--no-metrics",
    default=None,
    help="Answer GET /metrics in Prometheus's text format (default: off), to --metrics-allow-ips only.",
)
@click.option(
    "--metrics-allow-ips",
    type=_LIST,
    help="Addresses or networks that may scrape /metrics, comma-separated (default: 127.0.0.1,::1).",
)
@click.option(
    "--base-path",
    help="Serve everything under this prefix (e.g. /chat, as chat-ui's APP_BASE), for a proxy that "
    "forwards a sub-path unchanged (default: none).",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.option("--open", "open_page", is_flag=True, help="Open the chat page in the web browser once serving.")
def serve(
    config_path: str | None,
    gguf: str | None,
    hf: str | None,
    open_page: bool,
    debug: bool,
    log_level: str,
    **options: Any,
) -> None:
    """Serve the h2oGPT chat protocol (chat-ui era) with conversations in SQLite or PostgreSQL,
    plus an OpenAI-compatible API (/v1) and a TGI-compatible one (/generate).

    With no --config or --gguf it serves HuggingFaceTB/SmolLM2-135M-Instruct,
    run in-process by llama-cpp-python. Stop with Ctrl-C (or SIGTERM): open
    streams end with an error event and their partial answers are saved.

    \b
    Examples:
      h2ochat serve
      h2ochat serve --port 9000 --db /tmp/chat.db --no-welcome-gate
      h2ochat serve --config models.toml
      h2ochat serve --gguf ~/models/qwen2.5-0.5b-instruct-q4_k_m.gguf
      h2ochat serve --hf bartowski/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M
      h2ochat serve --base-path /chat
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(lambda: _serve(config_path, gguf, hf, open_page, options), debug)


async def _serve(
    config_path: str | None, gguf: str | None, hf: str | None, open_page: bool, overrides: dict[str, Any]
) -> None:
    from h2ochat.server import load_config, serve
    from h2ochat.server.inference.gguf import gguf_models
    from h2ochat.server.inference.hub import local_gguf
    from h2ochat.server.storage import redact

    if hf:  # pulled on first use, from the cache afterwards
        gguf = await asyncio.to_thread(local_gguf, f"hf:{hf}")
    # The options are named after the settings they override; None means "not given".
    models = gguf_models(gguf) if gguf is not None else None
    config = load_config(config_path, models=models, **overrides)

    def ready(url: str) -> None:
        names = ", ".join(model.name for model in config.models)
        stderr.print(
            f"[bold green]h2ochat[/] serving [bold]{url}[/] (models: {names}; database: {redact(config.db_path())})"
        )
        stderr.print(f"Chat in a web browser: [bold]{url}/[/]")
        stderr.print(f'[dim]Try: h2ochat ask --url {url} "Hello"   Stop: Ctrl-C[/]')
        if open_page:
            import webbrowser

            webbrowser.open(f"{url}/")

    stderr.print(f"[dim]Loading {', '.join(config.model_names)}…[/]")  # a large model takes a while
    await serve(config, ready)
