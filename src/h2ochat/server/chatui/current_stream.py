"""Today's chat-ui answer stream as a :class:`~h2ochat.server.streaming.Dialect` of the one answer loop.

``application/jsonl``, one ``MessageUpdate`` a line, encoded by :mod:`h2ochat.protocol.chatui`:
``status:started`` (exactly once), ``title`` when the conversation got one, NUL-padded ``stream``
tokens, ``finalAnswer`` with the whole text, the 4096 spaces chat-ui writes after it, and
``status:finished``. A failure is ``status:error`` and no ``finished``. A stop request ends the answer
as chat-ui does: ``finalAnswer`` with ``interrupted: true``, cut back to the stop point it gave.

What is not reproduced (docs/protocol.md): a keep-alive every 100 ms (one comes after the server's
``keepalive_interval`` of silence instead), and generation going on after the client leaves.
"""

from __future__ import annotations

from typing import Any

from h2ochat.protocol.chatui import (
    FINAL_ANSWER_SPACES,
    KEEP_ALIVE,
    FinalAnswerUpdate,
    StatusUpdate,
    TitleUpdate,
    encode_token,
    encode_update,
)
from h2ochat.server.chatui.stops import STOP_REQUESTED, clamp_utf16, stop_point
from h2ochat.server.edge.http import ApiError
from h2ochat.server.inference.backends import GeneratedToken
from h2ochat.server.streaming import Answer, Outcome

__all__ = ["HEADERS", "KEEP_ALIVE", "ChatUIUpdates", "first_words"]

HEADERS = {"Content-Type": "application/jsonl"}
_STARTED = encode_update(StatusUpdate("started"))
_FINISHED = encode_update(StatusUpdate("finished"))
# The HTTP status an error of each kind would have had, as chat-ui's statusCode says it.
_STATUS_CODES = {"validation": 422, "generation": 424, "overloaded": 429, "incomplete_generation": 500}


def first_words(text: str, count: int = 5) -> str:
    """chat-ui's title without a summarizing model: the first five words of the question."""
    return " ".join(text.split()[:count])[:100] or "New Chat"


class ChatUIUpdates:
    """The answer as ``MessageUpdate`` lines; one object per answer (it remembers the stop point's run)."""

    def __init__(self, title: str | None = None, generation_id: str | None = None) -> None:
        self.title = title
        self.generation_id = generation_id
        self.preamble = b""  # what leads the answer: the web search's updates (current_messages)
        self._answer: Answer | None = None

    def start(self, answer: Answer) -> bytes:
        self._answer = answer
        title = encode_update(TitleUpdate(self.title)) if self.title else b""
        return self.preamble + _STARTED + title

    def token(self, answer: Answer, token: GeneratedToken) -> bytes:
        # What stop sequences release, not the raw token: the text the person sees is the one saved.
        return encode_token(answer.piece) if answer.piece else b""

    def end(self, answer: Answer, token: GeneratedToken) -> bytes:
        # chat-ui marks an answer cut by its length as interrupted: the person may want it continued.
        final = FinalAnswerUpdate(answer.released, interrupted=answer.finish_reason == "length")
        return self.token(answer, token) + encode_update(final) + FINAL_ANSWER_SPACES + _FINISHED

    def error(self, message: str, error_type: str) -> bytes:
        # A person's stop is no failure in chat-ui: the answer ends as far as it got (the loop gives
        # only the message, so the answer is the one this stream started).
        if self._answer is not None and self.was_stopped(self._answer):
            return self.stopped(self._answer)
        return encode_update(StatusUpdate("error", message, _STATUS_CODES.get(error_type, 500)))

    def stopped(self, answer: Answer) -> bytes:
        """The end of an answer the person stopped: its text so far (cut to the stop point), interrupted."""
        final = FinalAnswerUpdate(self.saved_text(answer, answer.outcome("stopped")), interrupted=True)
        return encode_update(final) + FINAL_ANSWER_SPACES + _FINISHED

    def refusal(self, message: str, error_type: str, interrupted: bool) -> ApiError:
        return ApiError(_STATUS_CODES.get(error_type, 500), message)

    def result(self, answer: Answer, tokens: list[GeneratedToken]) -> Any:
        return {"text": answer.released}  # never sent whole; here for the Dialect interface

    def saved_text(self, answer: Answer, outcome: Outcome) -> str:
        """What is saved: the text the stream showed, cut back to the stop point of a stop request."""
        point = stop_point(answer.generation.stop_reason, self.generation_id)
        return answer.released if point is None else clamp_utf16(answer.released, point)

    @staticmethod
    def was_stopped(answer: Answer) -> bool:
        reason = answer.generation.stop_reason
        return reason is not None and reason.startswith(STOP_REQUESTED)
