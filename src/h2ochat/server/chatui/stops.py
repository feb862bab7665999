"""The stop request of both generations, and today's stop point: how much of the answer the person saw.

Current chat-ui's ``stop-generating`` may say ``{generationId, seenContentLength}``; the stopped answer
is then cut back to what the person saw, so that what is saved is what was shown. A stop reaches the
generation through the store (:meth:`Store.request_stop`), on whichever replica runs it, as a reason
in words; the stop point travels inside that reason, written and read here only.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

__all__ = ["STOP_REQUESTED", "StopPoint", "clamp_utf16", "stop_point", "stop_reason"]

STOP_REQUESTED = "stop-generating was requested"
_POINT = re.compile(r"\(the person saw (\d+) characters(?: of generation ([0-9a-fA-F-]{36}))?\)$")


class StopPoint(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """The JSON body of today's stop request; both fields optional, as chat-ui's are."""

    generation_id: str | None = None
    seen_content_length: Annotated[int, msgspec.Meta(ge=0)] | None = None


def stop_reason(point: StopPoint | None) -> str:
    """The reason a stop request gives, with its stop point when it has one."""
    if point is None or point.seen_content_length is None:
        return STOP_REQUESTED
    of = f" of generation {point.generation_id}" if point.generation_id else ""
    return f"{STOP_REQUESTED} (the person saw {point.seen_content_length} characters{of})"


def stop_point(reason: str | None, generation_id: str | None) -> int | None:
    """How many characters of ``generation_id``'s answer to keep, if the stop that ended it said so.

    A stop point naming another generation is not this one's (a stale stop from an earlier run).
    """
    if reason is None or not reason.startswith(STOP_REQUESTED):
        return None
    match = _POINT.search(reason)
    if match is None:
        return None
    named = match.group(2)
    if named is not None and generation_id is not None and named.lower() != generation_id.lower():
        return None
    return int(match.group(1))


def clamp_utf16(text: str, units: int) -> str:
    """``text`` cut to its first ``units`` UTF-16 code units, the way chat-ui (JavaScript) counts length;
    a character beyond the BMP is kept only whole."""
    if text.isascii():
        return text[:units]
    kept = 0
    for index, char in enumerate(text):
        kept += 2 if ord(char) > 0xFFFF else 1
        if kept > units:
            return text[:index]
    return text
