"""Reading a streamed answer, in either generation of the chat protocol: texts out, ``CallInfo`` filled in.

2023's answer is TGI's event stream (tokens, then an event with ``generated_text``);
today's chat-ui answers ``MessageUpdate`` lines (tokens, ``title``, ``reasoning``,
then ``finalAnswer``). Both readers yield the answer's texts one read at a time,
as a list (a step of an async generator per token cost the client 7% of its
throughput); the caller hands each text on and appends it to ``texts`` (what the
person has seen, which a stop request reports). They count the events they decoded (a reattach asks
for those after them: an empty chunk means the stream was reattached, and what was half-read comes
again), tell the transport when the first token came, and raise
h2ochat's errors with ``partial_text`` set. The decoders themselves are in
:mod:`h2ochat.protocol`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable
from typing import NoReturn

from h2ochat.protocol.chatui import (
    ChatUIStreamDecoder,
    FinalAnswerUpdate,
    MessageUpdate,
    ReasoningUpdate,
    StreamUpdate,
    TitleUpdate,
    WebSearchUpdate,
)
from h2ochat.protocol.errors import H2oChatError, IncompleteStream
from h2ochat.protocol.tgi import StreamEvent, TGIStreamDecoder
from h2ochat.providers.base import CallInfo
from h2ochat.providers.reattach import ResumableStream
from h2ochat.providers.transport import ByteStream

Chunks = ByteStream | ResumableStream

__all__ = ["fail", "read_current", "read_tgi"]


async def read_tgi(
    chunks: Chunks, info: CallInfo, texts: list[str], max_event_size: int
) -> AsyncGenerator[list[str], None]:
    """2023: the token texts of each read, until the event that carries ``generated_text``."""
    decoder = TGIStreamDecoder(max_event_size)
    try:
        async with chunks:
            async for chunk in chunks:
                if not chunk:  # reattached: what was half-read comes again, whole
                    decoder = TGIStreamDecoder(max_event_size)
                    continue
                batch: list[str] = []
                try:
                    for event in decoder.decode(chunk):
                        chunks.events += 1
                        if event.token is not None:
                            info.generated_tokens += 1
                            if not event.token.special:
                                batch.append(event.token.text)
                        if event.generated_text is not None:
                            _finish_tgi(info, event)
                            if rest := _missed(chunks, "".join(texts) + "".join(batch), event.generated_text):
                                batch.append(rest)
                            break
                except H2oChatError:
                    if batch:  # the tokens before an error in the same read are delivered first
                        yield batch
                    raise
                if info.generated_tokens:  # once per read, not per token: the hot path
                    chunks.got_token()
                if batch:
                    yield batch
                if info.done:
                    return
            raise _incomplete(chunks, texts)
    except H2oChatError as exc:
        fail(exc, texts)


async def read_current(
    chunks: Chunks, info: CallInfo, texts: list[str], max_line_size: int
) -> AsyncGenerator[list[str], None]:
    """Today's chat-ui: the ``stream`` tokens of each read until ``finalAnswer``, whose text is the answer.

    Reading stops at ``finalAnswer``, as chat-ui's page does: what follows (4096
    spaces, ``status:finished``) says nothing more. Thinking counts as the first
    token for the time limit, so a model that reasons at length is not cut off.
    """
    decoder = ChatUIStreamDecoder(max_line_size)
    try:
        async with chunks:
            async for chunk in chunks:
                if not chunk:  # reattached: what was half-read comes again, whole
                    decoder = ChatUIStreamDecoder(max_line_size)
                    continue
                batch: list[str] = []
                try:
                    updates = decoder.decode(chunk)
                    chunks.events += len(updates)
                    _take_all(updates, info, texts, batch)
                except H2oChatError:
                    if batch:  # the tokens before an error in the same read are delivered first
                        yield batch
                    raise
                if info.generated_tokens or info.reasoning:
                    chunks.got_token()
                if batch:
                    yield batch
                if info.done:
                    return
            batch = []
            _take_all(decoder.flush(), info, texts, batch)
            if batch:
                yield batch
            if info.done:
                return
            raise _incomplete(chunks, texts)
    except H2oChatError as exc:
        fail(exc, texts)


def _take_all(updates: Iterable[MessageUpdate], info: CallInfo, texts: list[str], batch: list[str]) -> None:
    """Append to ``batch`` the texts ``updates`` add to the answer, up to ``finalAnswer``; ``texts`` are
    those handed on before."""
    for update in updates:
        if type(update) is StreamUpdate:  # `type() is`: the hot path, and no subclasses exist
            if update.token:
                info.generated_tokens += 1
                batch.append(update.token)
        elif type(update) is FinalAnswerUpdate:
            rest = _finish_current(update, info, "".join(texts) + "".join(batch))
            if rest:
                batch.append(rest)
            break
        elif type(update) is TitleUpdate:
            info.title = update.title
        elif type(update) is ReasoningUpdate and update.subtype == "stream":
            info.reasoning += update.token
        elif type(update) is WebSearchUpdate and update.subtype == "sources" and isinstance(update.sources, list):
            info.sources = [source for source in update.sources if isinstance(source, dict)]


def _finish_current(update: FinalAnswerUpdate, info: CallInfo, seen: str) -> str | None:
    """``finalAnswer.text`` is the answer; what it adds to the tokens ``seen`` (a server that sent none, or
    text merged after a tool call) is handed on too. A text that does not extend them stays in
    ``info.generated_text``: what was handed on cannot be taken back."""
    info.generated_text = update.text
    # chat-ui marks a run interrupted when the model stopped without its end token: the length limit.
    info.finish_reason = "length" if update.interrupted else "stop"
    info.done = True
    if len(update.text) > len(seen) and update.text.startswith(seen):
        return update.text[len(seen) :]
    return None


def _missed(chunks: Chunks, seen: str, generated_text: str) -> str | None:
    """After a reattach to a log the server had compacted, what the final text holds beyond the tokens."""
    if getattr(chunks, "gap", False) and len(generated_text) > len(seen) and generated_text.startswith(seen):
        return generated_text[len(seen) :]
    return None


def _finish_tgi(info: CallInfo, event: StreamEvent) -> None:
    info.generated_text = event.generated_text
    if event.details is not None:
        info.finish_reason = event.details.finish_reason
        info.generated_tokens = event.details.generated_tokens
        info.seed = event.details.seed
    info.done = True


def _incomplete(chunks: Chunks, texts: list[str]) -> IncompleteStream:
    return IncompleteStream(
        f"{chunks.step} step: the stream from {chunks.url} ended before its final event "
        f"({len(texts)} tokens received); the server may have stopped or crashed"
    )


def fail(exc: H2oChatError, texts: list[str], cause: BaseException | None = None) -> NoReturn:
    exc.partial_text = "".join(texts)
    exc.step = exc.step or "message"
    raise exc from (cause or exc.__cause__)
