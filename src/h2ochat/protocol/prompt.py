"""Chat messages and the one-string prompt the h2oGPT provider sends (docs/protocol.md section 1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

__all__ = ["Message", "Messages", "check_messages", "format_prompt"]


class Message(TypedDict):
    role: str
    content: str


Messages = list[Message]


def check_messages(messages: Any) -> list[Message]:
    """Validate a message list; a ``ValueError`` names the first bad item."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise ValueError(
            f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise ValueError("messages is empty: pass at least one {'role': 'user', 'content': ...} message")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{index}] must be a dict with 'role' and 'content', got {message!r:.80}")
        for key in ("role", "content"):
            if key not in message:
                raise ValueError(f"messages[{index}] has no {key!r}: {dict(message)!r:.80}")
            if not isinstance(message[key], str):
                raise ValueError(f"messages[{index}][{key!r}] must be a string, got {type(message[key]).__name__}")
        if not message["role"].strip():
            raise ValueError(f"messages[{index}] has an empty role")
    return list(messages)


def format_prompt(messages: Messages) -> str:
    """The prompt for a message list.

    One message is sent as its content, unchanged.  Several become lines of
    ``Role: content`` joined by newlines, with ``\\nAssistant:`` appended so the
    model answers as the assistant.  The caller's list is never modified.
    """
    checked = check_messages(messages)
    if len(checked) == 1:
        return checked[0]["content"]
    lines = [f"{message['role'].capitalize()}: {message['content']}" for message in checked]
    return "\n".join(lines) + "\nAssistant:"
