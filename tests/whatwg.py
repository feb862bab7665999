"""The WHATWG rules for interpreting an event stream, written as literally as possible.

The reference the decoder tests judge by (tests/test_reliability_fuzz.py); it is
itself checked there on the standard's own examples.
"""

from __future__ import annotations

__all__ = ["Event", "reference"]

Event = tuple[str, str, str, "int | None"]  # type, data, last event id, retry


# The reference: WHATWG "interpreting an event stream", as literally as possible ---------------------


def reference(stream: bytes) -> list[Event]:
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    events: list[Event] = []
    data, event_type, last_id, retry = "", "", "", None
    for line in _lines(text):
        if line == "":
            # Dispatch: an empty data buffer dispatches nothing; one trailing LF is removed.
            if data:
                events.append((event_type or "message", data[:-1] if data.endswith("\n") else data, last_id, retry))
            data, event_type = "", ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value)
    return events


def _lines(text: str) -> list[str]:
    """Complete lines only (CR, LF or CRLF ends one); an unfinished last line is dropped."""
    lines, current, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char in "\r\n":
            lines.append("".join(current))
            current = []
            if char == "\r" and text[i + 1 : i + 2] == "\n":
                i += 1
        else:
            current.append(char)
        i += 1
    return lines
