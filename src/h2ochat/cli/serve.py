"""``h2ochat serve``: run the h2oGPT-compatible server."""

from __future__ import annotations

import logging
from typing import Any

import click

from h2ochat.cli.common import run, stderr

__all__ = ["serve"]


@click.command()
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default 8080; 0 picks a free one).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file: [server] and [[models]].")
@click.option("--gguf", type=click.Path(dir_okay=False), help="Serve this GGUF file instead of the embedded model.")
@click.option("--parallel", type=click.IntRange(1, 64), help="Answers each llama model computes at once (default 4).")
@click.option("--db", help="SQLite file (default: h2ochat.db in the user data directory; ':memory:' keeps nothing).")
@click.option("--no-welcome-gate", is_flag=True, help="Do not require the settings step before chatting.")
@click.option("--rate-limit", type=click.IntRange(0), help="Messages per minute per session (0: no limit).")
@click.option("--max-new-tokens", type=click.IntRange(1), help="Ceiling on parameters.max_new_tokens.")
@click.option("--max-input-chars", type=click.IntRange(1), help="Longest accepted inputs, in characters.")
@click.option("--max-body-bytes", type=click.IntRange(1024), help="Largest accepted request body.")
@click.option("--api-key", envvar="H2OCHAT_API_KEY", help="Bearer key required on /v1 (env H2OCHAT_API_KEY).")
@click.option("--tgi-model", help="The model behind the TGI API (/generate, /generate_stream); default: the first.")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def serve(config_path: str | None, gguf: str | None, debug: bool, log_level: str, **options: Any) -> None:
    """Serve the h2oGPT chat protocol (chat-ui era) with conversations in SQLite,
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
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(lambda: _serve(config_path, gguf, options), debug)


async def _serve(config_path: str | None, gguf: str | None, options: dict[str, Any]) -> None:
    from h2ochat.server import ServerConfig, default_models, load_config, serve
    from h2ochat.server.config import LlamaEndpoint

    config = load_config(config_path) if config_path else ServerConfig()
    if gguf:
        config.models = default_models(gguf)
    settings = {
        "host": options["host"],
        "port": options["port"],
        "db": options["db"],
        "welcome_gate": False if options["no_welcome_gate"] else None,
        "rate_limit_per_minute": options["rate_limit"],
        "max_new_tokens_limit": options["max_new_tokens"],
        "max_input_chars": options["max_input_chars"],
        "max_body_bytes": options["max_body_bytes"],
        "api_key": options["api_key"],
        "tgi_model": options["tgi_model"],
    }
    for key, value in settings.items():
        if value is not None:
            setattr(config, key, value)
    if options["parallel"] is not None:  # every llama endpoint; the other backends have their own limits
        for endpoint in (e for model in config.models for e in model.endpoints if isinstance(e, LlamaEndpoint)):
            endpoint.parallel = options["parallel"]

    def ready(url: str) -> None:
        names = ", ".join(model.name for model in config.models)
        stderr.print(f"[bold green]h2ochat[/] serving [bold]{url}[/] (models: {names}; database: {config.db_path()})")
        stderr.print(f'[dim]Try: h2ochat ask --url {url} "Hello"   Stop: Ctrl-C[/]')

    await serve(config, ready)
