"""``h2ochat models``: the models on this machine (the Hub cache) and a server's; ``pull`` and ``rm``."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from h2ochat.cli.ask import server_options
from h2ochat.cli.common import connect, fail, run, stderr

if TYPE_CHECKING:
    from h2ochat.server.inference.hub import LocalModel

__all__ = ["models"]


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the server's models as JSON (as GET /api/models).")
@server_options
@click.pass_context
def models(ctx: click.Context, as_json: bool, url: str | None, proxy: str | None, protocol: str, debug: bool) -> None:
    """List the GGUF models pulled to this machine, and the models a server offers
    (the embedded one when no --url is given).

    \b
    Examples:
      h2ochat models --url http://127.0.0.1:8080
      h2ochat models --json
      h2ochat models pull bartowski/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M
      h2ochat serve --hf bartowski/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M
      h2ochat models rm bartowski/Qwen2.5-1.5B-Instruct-GGUF
    """
    if ctx.invoked_subcommand is not None:
        return
    if not as_json:
        _print_local()
    run(lambda: _server_models(as_json, url, proxy, protocol), debug)


@models.command()
@click.argument("model", metavar="REPO[:QUANT or FILE]")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def pull(model: str, debug: bool) -> None:
    """Download a GGUF model from the Hugging Face Hub into its cache (resumable).

    Without :QUANT, Q4_K_M is taken when the repository has it, its only GGUF file
    when it has one; otherwise the choices are listed. HF_TOKEN opens gated
    repositories; HF_HUB_OFFLINE=1 only looks in the cache.

    \b
    Examples:
      h2ochat models pull bartowski/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M
      h2ochat models pull HuggingFaceTB/SmolLM2-360M-Instruct-GGUF:smollm2-360m-instruct-q8_0.gguf
    """
    from h2ochat.server.inference.hub import human_size

    pulled = run(lambda: asyncio.to_thread(_pull, model), debug)
    stderr.print(f"[bold green]Pulled[/] {pulled.repo} {pulled.file} ({human_size(pulled.size)})")
    print(pulled.path)
    stderr.print(f"[dim]Serve it: h2ochat serve --hf {pulled.repo}:{pulled.file}[/]")


def _pull(model: str) -> LocalModel:
    from h2ochat.server.inference.hub import parse_spec, pull

    spec = parse_spec(model)
    stderr.print(f"[dim]Pulling {spec} from the Hugging Face Hub…[/]")
    return pull(spec)


@models.command()
@click.argument("repo", metavar="REPO")
def rm(repo: str) -> None:
    """Delete a repository's files from the Hub cache.

    \b
    Examples:
      h2ochat models rm bartowski/Qwen2.5-1.5B-Instruct-GGUF
    """
    from h2ochat.server.inference.hub import human_size, remove

    freed = remove(repo.removeprefix("hf:").partition(":")[0])
    if not freed:
        fail(f"{repo} is not in the cache (h2ochat models lists what is)")
    stderr.print(f"Removed {repo} ({human_size(freed)} freed).")


def _print_local() -> None:
    from h2ochat.server.inference.hub import cached_models, human_size

    try:
        pulled = cached_models()
    except ImportError:  # huggingface_hub absent (no 'local' extra): nothing can have been pulled
        return
    if not pulled:
        stderr.print("[dim]No models pulled to this machine (h2ochat models pull REPO:QUANT).[/]")
        return
    table = Table("pulled model (serve --hf)", "size", "path", box=None, header_style="bold", title_justify="left")
    for model in pulled:
        table.add_row(f"{model.repo}:{model.file}", human_size(model.size), str(model.path))
    Console().print(table)
    print()


async def _server_models(as_json: bool, url: str | None, proxy: str | None, protocol: str = "auto") -> None:
    async with connect(url, proxy, None, announce=False, protocol=protocol) as connection:
        offered = await connection.session.models()
    if as_json:
        print(json.dumps(offered, ensure_ascii=False, indent=2))
        return
    if not offered:
        fail("the server offers no models")
    table = Table("model", "name", "description", box=None, header_style="bold")
    for model in offered:
        table.add_row(str(model.get("id")), str(model.get("displayName", "")), str(model.get("description", "")))
    Console().print(table)
