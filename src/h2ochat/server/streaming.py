"""An answer in progress (:class:`Answer`), and relaying it as a TGI event stream (PROTOCOL.md section 4).

One event per token; the last carries ``generated_text`` (and ``details``
when asked). A comment keeps an idle stream alive. Errors, stops and
shutdowns end the stream with an in-stream error event, never a cut.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from aiohttp import web

from h2ochat.protocol.sse import encode_comment
from h2ochat.protocol.tgi import Details, Token, encode_error_event, encode_stream_event
from h2ochat.server.backends import BackendError, GeneratedToken, GenerationRequest
from h2ochat.server.generation import Generation, ModelRuntime, produce

__all__ = ["Answer", "EventWriter", "Interrupted", "Outcome", "relay", "stop_sequence"]

_KEEPALIVE = encode_comment()


@dataclass
class Outcome:
    """How an answer ended: its text, finish reason or interruption, token count."""

    text: str
    generated_tokens: int
    finish_reason: str | None = None
    interruption: str | None = None


class EventWriter:
    """Writes events to a prepared response; sends a keep-alive after ``interval`` s of silence."""

    def __init__(self, response: web.StreamResponse, interval: float, on_gone: Generation) -> None:
        self._response = response
        self._interval = interval
        self._generation = on_gone
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._keepalive = asyncio.ensure_future(self._keep_alive())

    async def write(self, data: bytes) -> None:
        self._last = self._loop.time()
        await self._response.write(data)

    async def finish(self, data: bytes) -> None:
        """The last event and the end of the body, in one write."""
        self._keepalive.cancel()
        await self._response.write_eof(data)

    def close(self) -> None:
        self._keepalive.cancel()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._last + self._interval - self._loop.time())
            if self._loop.time() - self._last >= self._interval:
                try:
                    await self.write(_KEEPALIVE)
                except ConnectionError:
                    self._generation.stop("client disconnected")
                    return


def stop_sequence(stops: list[str], text: str, added: int) -> bool:
    """Whether a stop sequence ends within the last ``added`` characters of ``text``."""
    return any(stop in text[-(len(stop) + added - 1) :] for stop in stops) if stops and added else False


class Interrupted(Exception):
    """The answer was stopped before its end (stop-generating, shutdown, the client left); the message says why."""


class Answer:
    """One answer: the model's tokens, with the request's stop sequences and max_new_tokens applied.

    Iterate ``tokens()`` once. ``text`` and ``count`` grow as it goes; the last
    token comes with ``finish_reason`` set. A model failure raises
    :class:`BackendError`, a stopped generation :class:`Interrupted`. Every
    API (chat-ui, TGI, OpenAI) formats an answer from this one loop.
    """

    def __init__(self, runtime: ModelRuntime, request: GenerationRequest, generation: Generation) -> None:
        self.runtime = runtime
        self.request = request
        self.generation = generation
        self.text = ""
        self.count = 0
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None

    @property
    def seed(self) -> int | None:
        """The seed to report: the request's, when it samples."""
        parameters = self.request.parameters
        return parameters.seed if parameters.do_sample else None

    async def tokens(self) -> AsyncGenerator[GeneratedToken, None]:
        generation = self.generation
        queue: asyncio.Queue[object] = asyncio.Queue()
        generation.on_stop(lambda: queue.put_nowait(generation))
        producer = asyncio.ensure_future(produce(self.runtime, self.request, queue))
        try:
            while self.finish_reason is None:
                item = await queue.get()
                if item is generation or generation.stop_reason is not None:
                    raise Interrupted(generation.stop_reason or "stopped")
                if item is None:
                    raise BackendError("the model stopped without saying why (no finish reason)")
                if isinstance(item, BackendError):
                    raise item
                assert isinstance(item, GeneratedToken)
                self._add(item)
                yield item
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    def _add(self, token: GeneratedToken) -> None:
        parameters = self.request.parameters
        self.count += 1
        if not token.special:
            self.text += token.text
        finish = token.finish_reason
        if finish is None and stop_sequence(parameters.stop, self.text, len(token.text)):
            finish = "stop_sequence"
        if finish is None and parameters.max_new_tokens is not None and self.count >= parameters.max_new_tokens:
            finish = "length"
        self.finish_reason = finish
        if token.prompt_tokens is not None:
            self.prompt_tokens = token.prompt_tokens

    def outcome(self, interruption: str | None = None) -> Outcome:
        if interruption is not None:
            return Outcome(self.text, self.count, interruption=interruption)
        return Outcome(self.text, self.count, finish_reason=self.finish_reason)


async def relay(writer: EventWriter, answer: Answer, prefix: str = "") -> Outcome:
    """Generate and write the answer as TGI events; always returns how it ended, never raises for the client."""
    parameters = answer.request.parameters
    generation = answer.generation
    try:
        async with contextlib.aclosing(answer.tokens()) as tokens:
            async for item in tokens:
                token = Token(item.id, item.text, item.logprob, item.special)
                if answer.finish_reason is None:
                    await writer.write(encode_stream_event(token))
                    continue
                details = Details(answer.finish_reason, answer.count, answer.seed)
                full = prefix + answer.text if parameters.return_full_text else answer.text
                await writer.finish(encode_stream_event(token, full, details if parameters.details else None))
        return answer.outcome()
    except Interrupted as exc:
        return await _interrupt(writer, answer, str(exc))
    except BackendError as exc:
        return await _fail(writer, answer, exc)
    except ConnectionError:
        generation.stop("client disconnected")
        return answer.outcome("client disconnected")
    finally:
        writer.close()


async def _interrupt(writer: EventWriter, answer: Answer, reason: str) -> Outcome:
    if reason != "client disconnected":
        with contextlib.suppress(ConnectionError):
            await writer.finish(encode_error_event(f"generation stopped: {reason}", "incomplete_generation"))
    return answer.outcome(reason)


async def _fail(writer: EventWriter, answer: Answer, error: BackendError) -> Outcome:
    with contextlib.suppress(ConnectionError):
        await writer.finish(encode_error_event(str(error), error.error_type))
    return answer.outcome(f"error: {error}")
