"""A conversation's title, written by its model from the first message, and cleaned of what models add.

Small models answer "write a title" with more than a title: "Here's a possible title: **Paris,
France**", quotes, a trailing "Let me know…", several lines. What reaches the sidebar is the title
alone, at most about 60 characters, cut at a word.
"""

from __future__ import annotations

import re

from h2ochat.protocol.parameters import Parameters
from h2ochat.server.inference.runtime import ModelRuntime, build_request

__all__ = ["MAX_TITLE", "clean_title", "summarize", "title_from_message"]

MAX_TITLE = 60

_SUMMARY = (
    "Write a title of at most five words for a conversation that starts with the message below. "
    "Answer with the title only.\n\nMessage: {message}"
)
# "Here's a possible title:", "Title -", "Sure! Suggested title:"...
_PREAMBLE = re.compile(
    r"^(?:(?:sure|okay|ok|certainly)[!,.]?\s*)?(?:here(?:'s| is)\s+)?(?:a\s+)?(?:possible\s+|suggested\s+|short\s+)?"
    r"title(?:\s+for\s+[^:]*)?\s*(?:is)?\s*[:\-\u2013]\s*",
    re.IGNORECASE,
)
# Quotes of every kind, dashes and the punctuation a title never ends or starts with.
_EDGES = " \"'\u201c\u201d\u2018\u2019\u00ab\u00bb.:;,-\u2013"
_MARKUP = re.compile(r"[*_`#>\[\]]+")


async def summarize(runtime: ModelRuntime, message: str) -> str:
    """A short title for a conversation, written by its model (greedy, a few tokens)."""
    parameters = Parameters(do_sample=False, max_new_tokens=24, truncate=1024)
    request = build_request(
        runtime.config, [{"role": "user", "content": _SUMMARY.format(message=message[:2000])}], parameters
    )
    parts: list[str] = []
    async for token in runtime.generate(request):
        if not token.special:
            parts.append(token.text)
        if token.finish_reason or len(parts) >= 24:
            break
    return clean_title("".join(parts)) or title_from_message(message)


def clean_title(text: str) -> str:
    """The title in a model's answer: its first line, without preamble, Markdown, quotes or a fragment."""
    line = next((line for line in text.strip().splitlines() if line.strip()), "")
    line = _MARKUP.sub("", line).strip()
    line = _PREAMBLE.sub("", line).strip()
    line = line.strip(_EDGES).strip()
    return _shorten(" ".join(line.split()))


def title_from_message(message: str) -> str:
    """A title from the person's own words, when the model wrote none (or never answered)."""
    return _shorten(" ".join(_MARKUP.sub("", message).split())) or "New Chat"


def _shorten(text: str) -> str:
    """At most MAX_TITLE characters, cut at a word (a cut word would read as a typo)."""
    if len(text) <= MAX_TITLE:
        return text
    cut = text[: MAX_TITLE - 1].rsplit(" ", 1)[0].rstrip(" ,;:-\u2013")
    return cut + "…"
