"""A session's conversations from creation to delete: made in advance, handed out once, never leaked.

Every call takes a conversation (the one made in advance while the last answer
streamed, else a new one) and gives it back to :meth:`Conversations.end`, which
stops a run of today's protocol the caller left and deletes the conversation,
whatever happened to the call. A caller cancelled while its conversation is
being created gets it deleted once it exists. The background tasks are kept
here so that closing the session waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec

from h2ochat.protocol.chatui_bodies import CreatedConversation
from h2ochat.protocol.errors import ConversationNotFound, DeleteFailedWarning, H2oChatError, ProtocolError
from h2ochat.protocol.nesting import too_deep
from h2ochat.providers.current import CurrentSteps, Generation
from h2ochat.providers.transport import Transport

__all__ = ["Conversations", "decode_json"]

log = logging.getLogger("h2ochat")
T = TypeVar("T")


class Conversations:
    """Creating, handing out and deleting one session's conversations, in the generation it speaks.

    ``generation`` is set by the session before the first creation: it decides
    the create and delete requests.
    """

    def __init__(self, http: Transport, current: CurrentSteps, *, prefetch: bool) -> None:
        self.http = http
        self.current = current
        self.prefetch = prefetch
        self.generation: Generation | None = None
        self.closed = False
        self._spares: dict[str, asyncio.Task[CreatedConversation]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    async def take(self, model: str) -> tuple[CreatedConversation, bool]:
        """The conversation made in advance if there is one (and True), else a new one."""
        spare = self._spares.pop(model, None)
        if spare is not None:
            try:
                return await self.own(spare), True
            except H2oChatError as exc:
                log.debug("the conversation made in advance failed (%s); creating one now", exc)
        return await self.new(model), False

    async def new(self, model: str) -> CreatedConversation:
        return await self.own(self.spawn(self._create(model)))

    def make_spare(self, model: str) -> None:
        """Create the next call's conversation now, so that it costs no round trip then."""
        if self.prefetch and not self.closed and model not in self._spares:
            self._spares[model] = self.spawn(self._create(model))

    async def own(self, creation: asyncio.Task[CreatedConversation]) -> CreatedConversation:
        """Await a conversation's creation; if the caller is cancelled meanwhile,
        the conversation is deleted once created instead of being leaked."""
        try:
            return await asyncio.shield(creation)
        except asyncio.CancelledError:
            self._discard(creation)
            raise

    def _discard(self, creation: asyncio.Task[CreatedConversation]) -> None:
        """Delete the conversation ``creation`` makes, now or once it is made."""
        if not creation.done():
            creation.add_done_callback(self._discard)
        elif not creation.cancelled() and creation.exception() is None:
            self.spawn(self.delete(creation.result().id, complete=False))

    def spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def aclose(self) -> None:
        """Delete the spares, and wait for every creation and delete still running."""
        self.closed = True
        for spare in self._spares.values():
            self._discard(spare)
        self._spares.clear()
        # A finished creation schedules its delete before gather() returns, hence the loop. Shielded:
        # a cancellation here (a second one, or a timeout around the caller) must not cancel the
        # deletes; it is raised afterwards.
        cancelled: asyncio.CancelledError | None = None
        while self._background:
            try:
                await asyncio.shield(asyncio.gather(*self._background, return_exceptions=True))
            except asyncio.CancelledError as exc:
                cancelled = exc
        if cancelled is not None:
            raise cancelled

    async def _create(self, model: str) -> CreatedConversation:
        if self.generation == "current":
            return await self.current.create(model)
        body = await self.http.request(
            "conversation", "POST", "/conversation", content=msgspec.json.encode({"model": model})
        )
        answer = decode_json(body)
        conversation = answer.get("conversationId") if isinstance(answer, dict) else None
        if not isinstance(conversation, str) or not conversation:
            raise ProtocolError(
                f"conversation step: {self.http.root}/conversation answered without a conversationId: {body[:120]!r}"
            )
        return CreatedConversation(conversation, None, None)

    async def end(self, conversation: str, *, complete: bool, stop: str | None = None, seen: str = "") -> None:
        """Stop the run ``stop`` of today's protocol if the caller left it (at what it saw), then delete."""
        if stop is not None:
            try:
                await self.current.stop(conversation, stop, seen)
            except H2oChatError as exc:
                log.warning("could not stop the answer in conversation %s: %s", conversation, exc)
        await self.delete(conversation, complete=complete)

    async def delete(self, conversation: str, *, complete: bool) -> None:
        """The last step. After a complete answer a failure is a warning, so the answer is kept."""
        try:
            if self.generation == "current":
                await self.current.delete(conversation)
            else:
                await self.http.request("delete", "DELETE", f"/conversation/{conversation}")
        except ConversationNotFound:
            pass  # already gone: the goal of the step is reached
        except H2oChatError as exc:
            if complete:
                warnings.warn(
                    f"the answer is complete, but its conversation {conversation} could not be deleted: {exc}",
                    DeleteFailedWarning,
                    stacklevel=2,
                )
            else:
                log.warning("could not delete conversation %s: %s", conversation, exc)


def decode_json(body: bytes) -> Any:
    """A JSON answer, or None when it is not JSON at all, or nested past our limit.

    msgspec raises UnicodeDecodeError for invalid UTF-8 inside a string: just a bad answer here.
    """
    if too_deep(body):
        return None
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
