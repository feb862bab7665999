"""``h2ochat ask`` (one question, streamed), and the options that ask, chat and models share."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from h2ochat.cli.common import complete_model, connect, parse_parameters, run, stderr, stdin_text
from h2ochat.protocol.prompt import Message

__all__ = ["Spinner", "ask", "generation_options", "server_options"]


def server_options(function: Any) -> Any:
    """--url, --proxy, --protocol and --debug, shared by the commands that talk to a server."""
    function = click.option(
        "--protocol",
        type=click.Choice(["auto", "2023", "current"]),
        default="auto",
        show_default=True,
        help="Chat protocol generation: chat-ui of 2023, or of today (HuggingChat); auto asks the server once.",
    )(function)
    function = click.option(
        "--url",
        help="Server root, e.g. http://127.0.0.1:8080 (env H2OCHAT_URL). Default: the embedded model.",
    )(function)
    function = click.option(
        "--proxy", help="Proxy URL: http://, https://, socks4:// or socks5:// (user:pass@ allowed)."
    )(function)
    return click.option("--debug", is_flag=True, help="Show tracebacks of errors.")(function)


def generation_options(function: Any) -> Any:
    """--model, --system and -p, shared by ask and chat."""
    function = click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        help="Generation parameter, repeatable; values are JSON where possible (-p temperature=0.2).",
    )(function)
    function = click.option("-s", "--system", help="A system message sent before the conversation.")(function)
    return click.option(
        "-m", "--model", shell_complete=complete_model, help="Model to use (default: the server's first model)."
    )(function)


@click.command()
@click.argument("question", required=False)
@generation_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: text, finish reason, tokens, timings.")
@click.option("--no-stream", is_flag=True, help="Print the answer once it is complete.")
@click.option("--web", is_flag=True, help="Have the server search the web first; its sources are printed after.")
@server_options
def ask(
    question: str | None,
    model: str | None,
    system: str | None,
    params: tuple[str, ...],
    as_json: bool,
    no_stream: bool,
    web: bool,
    url: str | None,
    proxy: str | None,
    protocol: str,
    debug: bool,
) -> None:
    """Ask one question and stream the answer to stdout.

    \b
    Examples:
      h2ochat ask "What is the capital of France?"
      echo "Summarise: $(cat notes.txt)" | h2ochat ask
      h2ochat ask --url http://127.0.0.1:8080 -p temperature=0.2 -p max_new_tokens=64 "Hi"
      h2ochat ask --json "Hi" | jq .text
      h2ochat ask --web "Who won the match last night?"
    """
    text = question if question is not None else stdin_text()
    if not text.strip():
        raise click.UsageError('give a question, e.g. h2ochat ask "Hello", or pipe one on stdin')
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    parameters = parse_parameters(params)
    run(lambda: _ask(messages, model, parameters, url, proxy, as_json, no_stream, protocol, web=web), debug)


async def _ask(
    messages: list[Message],
    model: str | None,
    parameters: dict[str, Any],
    url: str | None,
    proxy: str | None,
    as_json: bool,
    no_stream: bool,
    protocol: str = "auto",
    *,
    web: bool = False,
) -> None:
    stream_to_stdout = not (as_json or no_stream)
    async with connect(url, proxy, model, announce=not as_json, protocol=protocol) as connection:
        started = time.perf_counter()
        first_token: float | None = None
        parts: list[str] = []
        result = connection.session.stream(
            messages, connection.model, web_search=web, **{**parameters, "details": True}
        )
        spinner = Spinner(enabled=stream_to_stdout)
        try:
            async for token in result:
                if first_token is None:
                    first_token = time.perf_counter() - started
                    spinner.stop()
                parts.append(token)
                if stream_to_stdout:
                    sys.stdout.write(token)
                    sys.stdout.flush()
        finally:
            spinner.stop()
        total = time.perf_counter() - started
        answer = "".join(parts)
        if as_json:
            info = result.info
            print(
                json.dumps(
                    {
                        "text": answer,
                        "model": connection.model,
                        "finish_reason": info.finish_reason,
                        "generated_tokens": info.generated_tokens,
                        "conversation_id": info.conversation_id,
                        "seconds_to_first_token": round(first_token or total, 4),
                        "seconds_total": round(total, 4),
                        "url": connection.session.root,
                        **({"sources": result.sources} if web else {}),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            sys.stdout.write(answer if no_stream else "")
            sys.stdout.write("\n")
            if web:
                _print_sources(result.sources)
            sys.stdout.flush()


def _print_sources(sources: list[dict[str, str]]) -> None:
    """The pages the answer cites as [1], [2], numbered as the model read them."""
    sys.stdout.write("\nSources:\n" if sources else "\n(The web search found no readable page.)\n")
    for number, source in enumerate(sources, start=1):
        sys.stdout.write(f"[{number}] {source.get('title', '')} <{source.get('link', '')}>\n")


class Spinner:
    """A "waiting for the first token" spinner on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        showing = enabled and stderr.is_terminal
        self._status = stderr.status("Waiting for the first token…", spinner="dots") if showing else None
        if self._status is not None:
            self._status.start()

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None
