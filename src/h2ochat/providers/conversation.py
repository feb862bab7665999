"""A conversation kept on a server of today's chat-ui, turn after turn: ``H2oSession.conversation()``.

Unlike a call (a new conversation per answer, the whole chat sent as one
prompt), each turn here posts only the new message, under the previous answer:
the server builds the prompt from the tree. The answer's id, the next turn's
parent, is not in the stream; it is read back from the conversation after the
turn (``GET /api/v2/conversations/<id>``), in the background, and the next turn
waits for it. A turn left early is stopped at what was seen, and its cut answer
is the next parent, as on chat-ui's page.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator

from h2ochat.protocol.errors import H2oChatError, ProtocolError
from h2ochat.providers.answers import read_current
from h2ochat.providers.base import AsyncResult, CallInfo
from h2ochat.providers.current import answer_id
from h2ochat.providers.lifecycle import Conversations

__all__ = ["Conversation"]

log = logging.getLogger("h2ochat")


class Conversation:
    """``async with session.conversation(model) as chat: await chat.send("Hi").text()``.

    ``id`` is the conversation's, ``parent`` the message the next turn goes under,
    ``title`` the last title the server gave. Leaving the ``async with`` deletes it
    (``keep=True`` keeps it on the server).
    """

    def __init__(
        self, conversations: Conversations, model: str, system: str | None, *, max_line_size: int, keep: bool = False
    ) -> None:
        self._conversations = conversations
        self._steps = conversations.current
        self.model = model
        self.system = system
        self.keep = keep
        self.id: str | None = None
        self.parent: str | None = None
        self.title: str | None = None
        self._max_line_size = max_line_size
        self._advancing: asyncio.Task[None] | None = None
        self._busy = False

    async def __aenter__(self) -> Conversation:
        created = await self._steps.create(self.model, self.system)
        self.id, self.parent = created.id, created.root_message_id
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._advancing is not None:
            await asyncio.gather(self._advancing, return_exceptions=True)
        conversation, self.id = self.id, None
        if conversation is not None and not self.keep:
            await self._conversations.delete(conversation, complete=True)

    def send(self, text: str) -> AsyncResult:
        """The answer to ``text``, streamed; the next ``send`` goes under it."""
        if not text:
            raise ValueError("send the text of a message (it is empty)")
        return AsyncResult(lambda info: self._turn(info, text))

    async def _turn(self, info: CallInfo, text: str) -> AsyncGenerator[str, None]:
        if self._busy:
            raise RuntimeError("one turn at a time: read or close the previous answer first")
        self._busy = True
        try:
            if self._advancing is not None:
                await self._advancing  # the previous turn's answer id, the parent of this one
            if self.id is None or self.parent is None:
                raise RuntimeError("the conversation is not open: use it in 'async with session.conversation(...)'")
            conversation, parent, generation_id = self.id, self.parent, str(uuid.uuid4())
            info.conversation_id = conversation
            texts: list[str] = []
            chunks = await self._steps.post(conversation, text, parent, generation_id)
            try:
                async for batch in read_current(chunks, info, texts, self._max_line_size):
                    for piece in batch:
                        texts.append(piece)
                        yield piece
            finally:
                stop = None if info.done else generation_id
                advance = self._advance(conversation, parent, generation_id, stop, "".join(texts))
                self._advancing = self._conversations.spawn(advance)
                if info.title:
                    self.title = info.title
        finally:
            self._busy = False

    async def _advance(self, conversation: str, parent: str, generation_id: str, stop: str | None, seen: str) -> None:
        """Stop a turn left early, then learn the answer's id: the next turn's parent."""
        if stop is not None:
            try:
                await self._steps.stop(conversation, stop, seen)
            except H2oChatError as exc:
                log.warning("could not stop the answer in conversation %s: %s", conversation, exc)
        answer = answer_id(await self._steps.conversation(conversation), parent, generation_id)
        if answer is None:
            raise ProtocolError(
                f"read step: conversation {conversation} holds no answer of run {generation_id} under {parent}: "
                "the next turn has no parent"
            )
        self.parent = answer
