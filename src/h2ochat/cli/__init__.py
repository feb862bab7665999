"""The ``h2ochat`` command: ask, chat, serve, models, export, import, keys.

``h2ochat "question"`` is short for ``h2ochat ask "question"``.
"""

from __future__ import annotations

import sys

import click

from h2ochat._version import __version__
from h2ochat.cli.ask import ask
from h2ochat.cli.chat import chat
from h2ochat.cli.keys import keys
from h2ochat.cli.models import models
from h2ochat.cli.portability import export, import_
from h2ochat.cli.serve import serve

__all__ = ["cli", "main"]


class DefaultGroup(click.Group):
    """A group whose most common command, ``ask``, needs no name."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["ask", *args]
        elif not args and not sys.stdin.isatty():
            args = ["ask"]  # echo "question" | h2ochat
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="h2ochat")
def cli() -> None:
    """Talk to h2oGPT-style chat servers, and run one.

    \b
    Examples:
      h2ochat ask "What is the capital of France?"   # the embedded model, no server needed
      h2ochat "Hi"                                    # same as ask
      h2ochat chat                                    # interactive
      h2ochat serve --port 8080                       # run a server
      h2ochat models --url http://127.0.0.1:8080      # what it offers, and the models pulled here
      h2ochat models pull bartowski/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M   # a model from the Hub
      h2ochat export history.zip --session <hf-chat cookie>   # every conversation of a session
      h2ochat import conversations.json --url http://127.0.0.1:8080   # an export, or ChatGPT's
      h2ochat keys create laptop --user alice@example.com   # a person's API key

    Set H2OCHAT_URL (or --url) to talk to a running server instead of the embedded model.
    """


cli.add_command(ask)
cli.add_command(chat)
cli.add_command(serve)
cli.add_command(models)
cli.add_command(export)
cli.add_command(import_)
cli.add_command(keys)


def main() -> None:
    cli(prog_name="h2ochat")
