"""The steps of today's chat-ui protocol on one :class:`Transport`, and telling the two generations apart.

Which generation a server speaks is learnt with one request, ``GET /api/v2/models``
(:func:`detect`). Every current chat-ui answers it, with its models in a superjson
envelope: it is the first step of a minimal client in chat-ui's own reading
(``../shared/CHATUI-CURRENT.md`` section 13) and one of the routes any compatible
server must serve, whereas ``/api/v2/feature-flags`` is not. The list it brings is
the session's models list, so the probe costs nothing more than asking for the
models. The chat-ui of 2023 (and h2oGPT's) has no ``/api/v2``: a 404 or 405, or a
200 that is no envelope (a page served for every path), means 2023. A server that
says it speaks both (h2ochat's: ``"h2ochat": {"protocols": ["2023", "current"]}`` beside the
envelope) is spoken to in 2023's, which carries generation parameters and details.

The steps (docs/protocol.md section 13): create a conversation (its system root is
the first turn's parent), post a message as ``multipart/form-data`` whose ``data``
part holds the JSON, stop a run at the point the person saw, read the conversation
back (the answer's id is the next turn's parent; the stream does not carry it),
delete the conversation.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from h2ochat.protocol import superjson
from h2ochat.protocol.chatui_bodies import (
    GENERATIONS,
    CreatedConversation,
    CreateRequest,
    Generation,
    announced_generations,
    decode_create_answer,
    message_post,
)
from h2ochat.protocol.errors import HTTPStatusError, ProtocolError
from h2ochat.providers.transport import ByteStream, Transport

__all__ = ["GENERATIONS", "CurrentSteps", "Generation", "answer_id", "detect", "utf16_length"]

log = logging.getLogger("h2ochat")
# SvelteKit answers errors as JSON only to requests that ask for it, and chat-ui's hooks do the same.
ACCEPT_JSON = {"Accept": "application/json"}
JSON_LINES = ("application/jsonl", "application/x-ndjson", "application/json-lines")
_encoder = msgspec.json.Encoder()


async def detect(http: Transport) -> tuple[Generation, list[dict[str, Any]] | None]:
    """The generation ``http``'s server speaks, with its models when it is today's.

    A failure that says nothing about the generation (the network, 429, 5xx, a
    refusal) is raised: the caller asks again next time, or the person forces it.
    """
    try:
        body = await http.request("probe", "GET", "/api/v2/models", headers=ACCEPT_JSON)
    except HTTPStatusError as exc:
        if exc.status in (404, 405):
            return "2023", None
        exc.args = (
            f"{exc.args[0]}; h2ochat asks GET /api/v2/models to tell which generation of the chat protocol "
            "the server speaks: pass protocol='current' (today's chat-ui) or protocol='2023' to skip it",
        )
        raise
    try:
        parsed = msgspec.json.decode(body)
        models = superjson.decode(parsed)
    except (msgspec.DecodeError, ProtocolError):
        return "2023", None
    if not isinstance(models, list) or "2023" in announced_generations(parsed):
        return "2023", None  # a server that speaks both: 2023 carries generation parameters and details
    return "current", [model for model in models if isinstance(model, dict)]


class CurrentSteps:
    """Requests of today's chat-ui protocol; what they mean is decided by the caller."""

    def __init__(self, http: Transport) -> None:
        self.http = http

    async def models(self) -> list[dict[str, Any]]:
        body = await self.http.request("models", "GET", "/api/v2/models", headers=ACCEPT_JSON)
        models = superjson.decode(body)
        if not isinstance(models, list):
            raise ProtocolError(f"models step: GET {self.http.root}/api/v2/models did not answer a list of models")
        return [model for model in models if isinstance(model, dict)]

    async def create(self, model: str, preprompt: str | None = None) -> CreatedConversation:
        """A new conversation and its root; a server that sends only the id is asked for the root."""
        request = _encoder.encode(CreateRequest(model=model, preprompt=preprompt))
        body = await self.http.request("conversation", "POST", "/conversation", content=request, headers=ACCEPT_JSON)
        created = decode_create_answer(body)
        if created.root_message_id is not None:
            return created
        conversation = await self.conversation(created.id)
        root = conversation.get("rootMessageId")
        if not isinstance(root, str):
            raise ProtocolError(
                f"conversation step: the conversation {created.id} has no rootMessageId; "
                "is this a chat-ui server of today? (protocol='2023' speaks the older one)"
            )
        return CreatedConversation(created.id, root, conversation)

    async def post(
        self,
        conversation: str,
        inputs: str,
        parent: str,
        generation_id: str,
        *,
        is_retry: bool = False,
        web_search: bool = False,
    ) -> ByteStream:
        """Send a message under ``parent`` (or retry it); the answer's lines as they come."""
        data = message_post(inputs, parent, generation_id=generation_id, is_retry=is_retry, web_search=web_search)
        return await self.http.stream(
            f"/conversation/{conversation}", {"data": data.decode()}, accept="application/json", expect=JSON_LINES
        )

    async def stop(self, conversation: str, generation_id: str, seen: str) -> None:
        """End a run at what the person saw: the server keeps generating after a disconnect otherwise."""
        body = _encoder.encode({"generationId": generation_id, "seenContentLength": utf16_length(seen)})
        await self.http.request(
            "stop", "POST", f"/conversation/{conversation}/stop-generating", content=body, headers=ACCEPT_JSON
        )

    async def conversation(self, conversation: str) -> dict[str, Any]:
        body = await self.http.request("read", "GET", f"/api/v2/conversations/{conversation}", headers=ACCEPT_JSON)
        value = superjson.decode(body)
        if not isinstance(value, dict):
            raise ProtocolError(f"read step: the conversation {conversation} is not an object: {body[:120]!r}")
        return value

    async def delete(self, conversation: str) -> None:
        await self.http.request("delete", "DELETE", f"/api/v2/conversations/{conversation}", headers=ACCEPT_JSON)


def answer_id(conversation: dict[str, Any], parent: str, generation_id: str) -> str | None:
    """The id of the answer a run wrote under ``parent``: the next turn's parent.

    The answer carries the run's ``generationId``; a server that does not store it
    is matched by position: the newest answer under the newest question under ``parent``.
    """
    messages = [m for m in conversation.get("messages") or [] if isinstance(m, dict)]
    for message in messages:
        if message.get("from") == "assistant" and message.get("generationId") == generation_id:
            identifier = message.get("id")
            return identifier if isinstance(identifier, str) else None
    questions = [m for m in messages if m.get("from") == "user" and _parent_of(m) == parent]
    for question in reversed(questions):
        answers = [m for m in messages if m.get("from") == "assistant" and _parent_of(m) == question.get("id")]
        if answers and isinstance(answers[-1].get("id"), str):
            return str(answers[-1]["id"])
    return None


def _parent_of(message: dict[str, Any]) -> Any:
    ancestors = message.get("ancestors")
    return ancestors[-1] if isinstance(ancestors, list) and ancestors else None


def utf16_length(text: str) -> int:
    """The length JavaScript gives ``text`` (UTF-16 code units), which chat-ui's stop point counts in."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2
