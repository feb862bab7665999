"""``h2ochat chat``: an interactive conversation in the terminal.

The whole exchange so far is sent each turn, as the provider does. Ctrl-C
while an answer streams stops it (the connection closes, so the server stops
generating) and returns to the prompt; Ctrl-D leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.spinner import Spinner
from rich.text import Text

from h2ochat.cli.ask import generation_options, server_options
from h2ochat.cli.common import Connection, connect, parse_parameters, run
from h2ochat.protocol.errors import H2oChatError
from h2ochat.protocol.prompt import Message

__all__ = ["chat"]

HELP = """Commands:
  /new            start a new conversation
  /model NAME     switch model (checked against the server's models)
  /models         list the server's models
  /system TEXT    set the system message (empty to remove it)
  /save FILE      save the conversation (.json, or Markdown otherwise)
  /exit           leave (or Ctrl-D)
Enter sends; Alt-Enter (or Esc then Enter) adds a line. Ctrl-C stops an answer."""


@click.command()
@generation_options
@server_options
def chat(
    model: str | None,
    system: str | None,
    params: tuple[str, ...],
    url: str | None,
    proxy: str | None,
    protocol: str,
    debug: bool,
) -> None:
    """Chat interactively; history is kept across runs.

    \b
    Examples:
      h2ochat chat
      h2ochat chat --url http://127.0.0.1:8080 -s "Answer in one sentence."
    """
    parameters = parse_parameters(params)
    run(lambda: _chat(model, system, parameters, url, proxy, protocol), debug)


async def _chat(
    model: str | None,
    system: str | None,
    parameters: dict[str, Any],
    url: str | None,
    proxy: str | None,
    protocol: str = "auto",
) -> None:
    async with connect(url, proxy, model, protocol=protocol) as connection:
        await Chat(connection, system, parameters).run()


class Chat:
    def __init__(self, connection: Connection, system: str | None, parameters: dict[str, Any]) -> None:
        self.connection = connection
        self.model = connection.model
        self.system = system
        self.parameters = parameters
        self.messages: list[Message] = []
        self.console = Console()

    async def run(self) -> None:
        self.console.print(f"[dim]Chatting with {self.model or 'the default model'}. /help for commands.[/]")
        read = _terminal_reader() if sys.stdin.isatty() else _pipe_reader()
        while True:
            try:
                text = await read()
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            text = text.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not await self.command(text):
                    break
                continue
            await self.turn(text)

    async def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        name, _, argument = line.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/new":
            self.messages.clear()
            self.console.print("[dim]New conversation.[/]")
        elif name == "/model" and argument:
            await self.switch_model(argument)
        elif name == "/models":
            offered = await self.offered()
            self.console.print(", ".join(offered) if offered else "[dim]This server does not list its models.[/]")
        elif name == "/system":
            self.system = argument or None
            self.console.print(f"[dim]System message {'set' if argument else 'removed'}.[/]")
        elif name == "/save" and argument:
            self.save(Path(argument))
        else:
            self.console.print(HELP if name == "/help" else f"[red]Unknown command {line!r}.[/] /help lists them.")
        return True

    async def switch_model(self, name: str) -> None:
        """Switch now if the server offers ``name``; an unknown name is refused at once, not at the next message."""
        offered = await self.offered()
        if offered is not None and name not in offered:
            self.console.print(f"[red]Unknown model {name!r}.[/] This server offers: {', '.join(offered)}")
            return
        self.model = name
        unchecked = " (unchecked: this server does not list its models)" if offered is None else ""
        self.console.print(f"[dim]Model: {name}{unchecked}[/]")

    async def offered(self) -> list[str] | None:
        """The server's model names; None when it does not list them (chat-ui has no /api/models)."""
        try:
            return [str(model.get("id")) for model in await self.connection.session.models()]
        except H2oChatError:
            return None

    def save(self, path: Path) -> None:
        transcript = self.transcript()
        if path.suffix == ".json":
            path.write_text(json.dumps(transcript, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        else:
            lines = [f"**{m['role'].capitalize()}:** {m['content']}\n" for m in transcript]
            path.write_text("\n".join(lines), encoding="utf-8")
        self.console.print(f"[dim]Saved {len(transcript)} messages to {path}.[/]")

    def transcript(self) -> list[Message]:
        system: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.messages

    async def turn(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
        parts: list[str] = []
        answer = asyncio.ensure_future(self.answer(parts))
        stopped = False

        def stop() -> None:
            nonlocal stopped
            stopped = True
            answer.cancel()

        loop = asyncio.get_running_loop()
        # Ctrl-C while streaming cancels this answer only, not the whole program.
        loop.add_signal_handler(signal.SIGINT, stop)
        try:
            await answer
        except asyncio.CancelledError:
            if not stopped:
                raise
            self.console.print("[dim]… stopped.[/]")
        except H2oChatError as exc:
            self.console.print(f"[bold red]Error:[/] {exc}")
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        if parts:
            self.messages.append({"role": "assistant", "content": "".join(parts)})
        else:
            self.messages.pop()  # nothing came back: the question can be asked again

    async def answer(self, parts: list[str]) -> None:
        result = self.connection.session.stream(self.transcript(), self.model, **self.parameters)
        if not self.console.is_terminal:
            async for token in result:
                parts.append(token)
                sys.stdout.write(token)
                sys.stdout.flush()
            sys.stdout.write("\n")
            return
        with Live(Spinner("dots", "Thinking…"), console=self.console, refresh_per_second=15) as live:
            try:
                async for token in result:
                    parts.append(token)
                    live.update(Text("".join(parts)))
            finally:
                # Once complete (or stopped), show the answer rendered as Markdown.
                live.update(Markdown("".join(parts)) if parts else Text(""))


def _terminal_reader() -> Any:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(_history_file())), key_bindings=bindings, prompt_continuation="... "
    )

    async def read() -> str:
        return str(await session.prompt_async("> "))

    return read


def _pipe_reader() -> Any:
    """Without a terminal, each line of stdin is one message."""

    async def read() -> str:
        line: str = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if not line:
            raise EOFError
        return line

    return read


def _history_file() -> Path:
    import platformdirs

    directory = Path(platformdirs.user_data_dir("h2ochat"))
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
    return directory / "chat_history"
