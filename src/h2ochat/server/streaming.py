"""Relaying a generation to the client as a TGI event stream (PROTOCOL.md section 4).

One event per token; the last carries ``generated_text`` (and ``details``
when asked). A comment keeps an idle stream alive. Errors, stops and
shutdowns end the stream with an in-stream error event, never a cut.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiohttp import web

from h2ochat.protocol.sse import encode_comment
from h2ochat.protocol.tgi import Details, Token, encode_error_event, encode_stream_event
from h2ochat.server.backends import BackendError, GeneratedToken, GenerationRequest
from h2ochat.server.generation import Generation, ModelRuntime, produce

__all__ = ["EventWriter", "Outcome", "relay"]

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


async def relay(
    writer: EventWriter,
    runtime: ModelRuntime,
    request: GenerationRequest,
    generation: Generation,
    prefix: str = "",
) -> Outcome:
    """Generate and write the answer; always returns how it ended, never raises for the client."""
    parameters = request.parameters
    queue: asyncio.Queue[object] = asyncio.Queue()
    generation.on_stop(lambda: queue.put_nowait(generation))
    producer = asyncio.ensure_future(produce(runtime, request, queue))
    text = ""
    count = 0
    limit = parameters.max_new_tokens
    try:
        while True:
            item = await queue.get()
            if item is generation or generation.stop_reason is not None:
                return await _interrupt(writer, text, count, generation.stop_reason or "stopped")
            if item is None:
                error = BackendError("the model stopped without saying why (no finish reason)")
                return await _fail(writer, text, count, error)
            if isinstance(item, BackendError):
                return await _fail(writer, text, count, item)
            assert isinstance(item, GeneratedToken)
            count += 1
            if not item.special:
                text += item.text
            finish = item.finish_reason
            if finish is None and stop_sequence(parameters.stop, text, len(item.text)):
                finish = "stop_sequence"
            if finish is None and limit is not None and count >= limit:
                finish = "length"
            token = Token(item.id, item.text, item.logprob, item.special)
            if finish is None:
                await writer.write(encode_stream_event(token))
                continue
            details = Details(finish, count, parameters.seed if parameters.do_sample else None)
            full = prefix + text if parameters.return_full_text else text
            await writer.finish(encode_stream_event(token, full, details if parameters.details else None))
            return Outcome(text, count, finish_reason=finish)
    except ConnectionError:
        generation.stop("client disconnected")
        return Outcome(text, count, interruption="client disconnected")
    finally:
        writer.close()
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


async def _interrupt(writer: EventWriter, text: str, count: int, reason: str) -> Outcome:
    if reason != "client disconnected":
        with contextlib.suppress(ConnectionError):
            await writer.finish(encode_error_event(f"generation stopped: {reason}", "incomplete_generation"))
    return Outcome(text, count, interruption=reason)


async def _fail(writer: EventWriter, text: str, count: int, error: BackendError) -> Outcome:
    with contextlib.suppress(ConnectionError):
        await writer.finish(encode_error_event(str(error), error.error_type))
    return Outcome(text, count, interruption=f"error: {error}")
