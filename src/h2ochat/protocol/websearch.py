"""The web search's progress on the wire, in both generations (docs/protocol.md section 18). Pure.

A search reports :class:`SearchEvent`s; chat-ui 2023 streamed them from
``GET /conversation/<id>/web-search`` as one JSON object a line (``update``, ``error``, ``sources``,
then ``result`` with the search's id), and today's chat-ui sends them inside the answer's stream as
``webSearch`` updates (subtypes ``update``, ``error``, ``sources``, ``finished``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from h2ochat.protocol.chatui import WebSearchUpdate, encode_update

__all__ = ["SearchEvent", "Source", "current_update", "legacy_line", "legacy_result", "source_from"]


@dataclass(frozen=True)
class Source:
    link: str
    title: str

    @property
    def hostname(self) -> str:
        return urlsplit(self.link).hostname or ""

    def to_json(self) -> dict[str, str]:
        return {"link": self.link, "title": self.title, "hostname": self.hostname}


def source_from(data: Any) -> Source:
    return Source(str(data.get("link", "")), str(data.get("title", "")))


@dataclass(frozen=True)
class SearchEvent:
    kind: Literal["update", "error", "sources"]
    message: str
    args: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """chat-ui 2023's shape (also how a stored search keeps its progress)."""
        if self.kind == "sources":
            return {"type": "sources", "message": self.message, "sources": [s.to_json() for s in self.sources]}
        return {"type": self.kind, "message": self.message, "args": self.args}

    @classmethod
    def from_json(cls, data: Any) -> SearchEvent:
        sources = [source_from(s) for s in data.get("sources") or []]
        return cls(data["type"], str(data.get("message", "")), [str(a) for a in data.get("args") or []], sources)


def legacy_line(event: SearchEvent) -> bytes:
    return json.dumps(event.to_json()).encode() + b"\n"


def legacy_result(search_id: str) -> bytes:
    return json.dumps({"type": "result", "id": search_id}).encode() + b"\n"


def current_update(event: SearchEvent | None) -> bytes:
    """A ``webSearch`` update line of today's stream; None: the ``finished`` one."""
    if event is None:
        return encode_update(WebSearchUpdate(subtype="finished"))
    if event.kind == "sources":
        sources = [source.to_json() for source in event.sources]
        return encode_update(WebSearchUpdate(subtype="sources", message=event.message, sources=sources))
    return encode_update(WebSearchUpdate(subtype=event.kind, message=event.message, args=event.args))
