"""The answer loop: one for the three APIs, each speaking through a small :class:`Dialect`.

:class:`Answer` applies a request's stop sequences and ``max_new_tokens`` to
the model's tokens. ``stream_answer`` owns the event stream (headers,
``prepare``, writes, keep-alives, the stop, the errors) and asks the dialect
only how to encode a token, the end, and an error; ``complete_answer`` is the
same loop for an answer sent whole. A failure after the stream has begun is
the stream's last event, never a cut (docs/protocol.md, "Event stream"). A
write the client does not take within ``write_timeout`` ends the answer as if
the client had left: a reader that stopped must not keep a place of the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from h2ochat.protocol.openai import StopTrimmer
from h2ochat.protocol.sse import encode_comment
from h2ochat.protocol.tgi import Details, Token, encode_error_event, encode_stream_event
from h2ochat.server.edge.http import CONFIG, ApiError
from h2ochat.server.edge.metrics import Metrics
from h2ochat.server.edge.quotas import check_tokens
from h2ochat.server.edge.security import printable
from h2ochat.server.edge.sockets import drop
from h2ochat.server.inference.backends import BackendError, GeneratedToken, GenerationRequest, Overloaded
from h2ochat.server.inference.runtime import Generation, Interrupted, ModelRuntime

__all__ = [
    "Answer",
    "Dialect",
    "EventWriter",
    "Interrupted",
    "Outcome",
    "Send",
    "TgiEvents",
    "admit",
    "answer_loop",
    "complete_answer",
    "describe",
    "stream_answer",
    "tgi_error",
    "within_quota",
]

log = logging.getLogger("h2ochat.server")

_KEEPALIVE = encode_comment()
_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


@dataclass
class Outcome:
    """How an answer ended: its text, finish reason or interruption, token count."""

    text: str
    generated_tokens: int
    finish_reason: str | None = None
    interruption: str | None = None


class Answer:
    """One answer: the model's tokens, with the request's stop sequences and max_new_tokens applied.

    Iterate ``tokens()`` once. ``text`` (TGI's generated text, stop sequence
    included) and ``count`` grow as it goes; ``piece`` is what the latest token
    released once stop sequences are cut out (OpenAI's content) and
    ``released`` all of it. The last token comes with ``finish_reason`` set. A
    model failure raises :class:`BackendError`.
    """

    def __init__(
        self, runtime: ModelRuntime, request: GenerationRequest, generation: Generation, metrics: Metrics | None
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics  # None unless the server counts (metrics = true)
        self.request = request
        self.generation = generation
        self.text = ""
        self.piece = ""
        self.released = ""
        self.count = 0
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self._stops = StopTrimmer(request.parameters.stop)

    @property
    def seed(self) -> int | None:
        """The seed to report: the request's, when it samples."""
        parameters = self.request.parameters
        return parameters.seed if parameters.do_sample else None

    async def tokens(self) -> AsyncGenerator[GeneratedToken, None]:
        timing = self.metrics.answer(self.runtime.config.name) if self.metrics is not None else None
        outcome = "interrupted"  # closed before its end: a stop, or the client gone
        try:
            async with contextlib.aclosing(self.runtime.generate(self.request)) as tokens:  # type: ignore[type-var]
                async for token in tokens:
                    self._add(token)
                    if timing is not None:
                        timing.token()
                    yield token
                    if self.finish_reason is not None:
                        outcome = self.finish_reason
                        return
            raise BackendError("the model stopped without saying why (no finish reason)")
        except BackendError:
            outcome = "error"
            raise
        except Exception as exc:  # a backend bug must reach the client as an error event, not a 500
            outcome = "error"
            log.exception("backend of %s failed", self.runtime.config.name)
            raise BackendError(f"the model failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if timing is not None:
                timing.end(outcome)

    def _add(self, token: GeneratedToken) -> None:
        self.count += 1
        piece = "" if token.special else self._stops.feed(token.text)
        if not token.special:
            self.text += token.text
        finish = token.finish_reason
        if finish is None and self._stops.stopped:
            finish = "stop_sequence"
        maximum = self.request.parameters.max_new_tokens
        if finish is None and maximum is not None and self.count >= maximum:
            finish = "length"
        if finish is not None:
            piece += self._stops.flush()
        self.piece = piece
        self.released += piece
        self.finish_reason = finish
        if token.prompt_tokens is not None:
            self.prompt_tokens = token.prompt_tokens

    def outcome(self, interruption: str | None = None) -> Outcome:
        if interruption is not None:
            return Outcome(self.text, self.count, interruption=interruption)
        return Outcome(self.text, self.count, finish_reason=self.finish_reason)


class Dialect(Protocol):
    """How one API words an answer; the loop does everything else."""

    def start(self, answer: Answer) -> bytes:
        """Sent before the first token (b"" for nothing)."""
        ...

    def token(self, answer: Answer, token: GeneratedToken) -> bytes:
        """A token before the last (b"" for nothing)."""
        ...

    def end(self, answer: Answer, token: GeneratedToken) -> bytes:
        """The last token and whatever closes the stream."""
        ...

    def error(self, message: str, error_type: str) -> bytes:
        """An error as the stream's last event."""
        ...

    def refusal(self, message: str, error_type: str, interrupted: bool) -> ApiError:
        """An error as the response, when the answer is sent whole."""
        ...

    def result(self, answer: Answer, tokens: list[GeneratedToken]) -> Any:
        """The JSON body of an answer sent whole."""
        ...


def admit(runtime: ModelRuntime, dialect: Dialect) -> None:
    """Refuse a request at once, in the API's shape with ``Retry-After``, when the model's queue is full."""
    try:
        runtime.admit()
    except Overloaded as exc:
        raise _refusal(dialect, exc) from None


async def within_quota(request: web.Request, dialect: Dialect) -> None:
    """The day's token quota (edge/quotas.py) for the APIs that keep no conversation, refused in their shape."""
    try:
        await check_tokens(request)
    except ApiError as exc:
        refusal = dialect.refusal(str(exc), "overloaded", interrupted=False)
        refusal.status, refusal.headers = exc.status, exc.headers
        raise refusal from None


def _refusal(dialect: Dialect, error: BackendError | Interrupted) -> ApiError:
    refusal = dialect.refusal(*describe(error), interrupted=isinstance(error, Interrupted))
    if isinstance(error, Overloaded):
        refusal.headers = {**(refusal.headers or {}), "Retry-After": str(error.retry_after)}
    return refusal


def describe(error: BackendError | Interrupted) -> tuple[str, str]:
    """An error's message and TGI error type, for every dialect alike."""
    if isinstance(error, Interrupted):
        return f"generation stopped: {error}", "incomplete_generation"
    if error.public is not None:  # the details name internal addresses: the log has them, under a reference
        reference = secrets.token_hex(4)
        log.warning("an answer failed (request %s): %s", reference, printable(str(error)))
        return f"{error.public} (request {reference}; the server's log has the details)", error.error_type
    return str(error), error.error_type


class EventWriter:
    """Writes events to a prepared response; sends a keep-alive after ``interval`` s of silence.

    ``gone`` is called when a keep-alive finds the client gone (no write of the caller's is waiting then).

    A write not taken by the client within ``write_timeout`` s aborts the connection and
    raises :class:`ConnectionResetError`, as a client that left does: aiohttp's writes wait
    for a full send buffer to drain, which a client that stopped reading never lets happen.
    """

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        gone: Callable[[], None],
        interval: float,
        timeout: float,
        keep_alive: bytes | None = None,
    ) -> None:
        self._request = request
        self._keep_alive_bytes = keep_alive or _KEEPALIVE
        self._response = response
        self._gone = gone
        self._interval = interval
        self._timeout = timeout
        self._stalled = False
        self._writing = 0  # writes waiting for the client now
        self._since = 0.0  # since when they have waited (loop time)
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._keepalive = asyncio.ensure_future(self._keep_alive())

    async def write(self, data: bytes) -> None:
        if data:
            self._last = self._loop.time()
            await self._within_timeout(self._response.write(data))

    async def finish(self, data: bytes) -> None:
        """The last event and the end of the body, in one write."""
        self._keepalive.cancel()
        await self._within_timeout(self._response.write_eof(data))

    async def _within_timeout(self, writing: Awaitable[None]) -> None:
        # A watchdog rather than asyncio.wait_for or a timer per write: a token costs two counts, not
        # a task or a timer, and a write is never cancelled halfway (the abort ends its wait).
        if not self._writing:
            self._since = self._loop.time()
        self._writing += 1
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._timeout, self._watch)
        try:
            await writing
        finally:
            self._writing -= 1
            if self._writing:  # one done, another still waiting: the client took something
                self._since = self._loop.time()
        if self._stalled:
            raise ConnectionResetError(f"the client read nothing for {self._timeout:g} s (write_timeout)")

    def _watch(self) -> None:
        self._watchdog = None
        if not self._writing:
            return  # the next write sets it again
        waited = self._loop.time() - self._since
        if waited < self._timeout:
            self._watchdog = self._loop.call_later(self._timeout - waited, self._watch)
            return
        self._stalled = True
        transport = self._request.transport
        log.info("a client stopped reading its stream for %g s (write_timeout): closing it", self._timeout)
        if transport is not None:
            drop(transport)

    def close(self) -> None:
        self._keepalive.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._last + self._interval - self._loop.time())
            if self._loop.time() - self._last >= self._interval:
                try:
                    await self.write(self._keep_alive_bytes)
                except ConnectionError:
                    self._gone()
                    return


Send = Callable[[bytes, bool], Awaitable[None]]
"""Where the answer loop's bytes go: ``send(data, last)``; ``last`` ends the stream."""


async def answer_loop(answer: Answer, dialect: Dialect, send: Send) -> Outcome:
    """The one answer loop: the dialect's bytes for the answer, from its start to its end or error.

    ``send`` is a response being written (:func:`stream_answer`) or a run's log (the chat protocol's
    stored answers, which outlive their connection). A ``ConnectionError`` from ``send`` is the
    caller's to handle; an error event the client can no longer take is dropped.
    """
    generation = answer.generation
    try:
        with generation.interruptible():
            await send(dialect.start(answer), False)
            async with contextlib.aclosing(answer.tokens()) as tokens:
                async for token in tokens:
                    if answer.finish_reason is None:
                        await send(dialect.token(answer, token), False)
                    else:
                        await send(dialect.end(answer, token), True)
        return answer.outcome()
    except (Interrupted, BackendError) as exc:
        message, error_type = describe(exc)
        if generation.stop_reason != "client disconnected":
            with contextlib.suppress(ConnectionError):
                await send(dialect.error(message, error_type), True)
        return answer.outcome(str(exc) if isinstance(exc, Interrupted) else f"error: {exc}")


async def stream_answer(
    request: web.Request,
    answer: Answer,
    dialect: Dialect,
    headers: dict[str, str] | None = None,
    *,
    keep_alive: bytes | None = None,
) -> tuple[web.StreamResponse, Outcome]:
    """Generate and stream the answer; returns the response and how the answer ended, never raises for the client.

    The client leaving stops the answer. ``keep_alive`` is what is written after ``keepalive_interval``
    of silence (default: an event-stream comment); ``headers`` may replace the event stream's Content-Type.
    """
    config = request.app[CONFIG]
    response = web.StreamResponse(headers={**_HEADERS, **(headers or {})})
    generation = answer.generation
    try:
        await response.prepare(request)
    except ConnectionError:
        return response, answer.outcome("client disconnected")

    def gone() -> None:
        generation.stop("client disconnected")

    writer = EventWriter(request, response, gone, config.keepalive_interval, config.write_timeout, keep_alive)

    async def send(data: bytes, last: bool) -> None:
        await (writer.finish(data) if last else writer.write(data))

    try:
        return response, await answer_loop(answer, dialect, send)
    except ConnectionError:
        gone()
        return response, answer.outcome("client disconnected")
    finally:
        writer.close()


async def complete_answer(answer: Answer, dialect: Dialect) -> Any:
    """Generate the whole answer; the dialect's JSON body, or its refusal raised."""
    collected: list[GeneratedToken] = []
    try:
        with answer.generation.interruptible():
            async with contextlib.aclosing(answer.tokens()) as tokens:
                async for token in tokens:
                    collected.append(token)
    except (Interrupted, BackendError) as exc:
        raise _refusal(dialect, exc) from None
    return dialect.result(answer, collected)


# TGI's statuses for its error types.
_TGI_STATUSES = {"validation": 422, "generation": 424, "overloaded": 429, "incomplete_generation": 500}


def tgi_error(error: str, error_type: str) -> ApiError:
    """A refusal in TGI's shape, ``{"error", "error_type"}``, with TGI's status for the type."""
    return ApiError(_TGI_STATUSES.get(error_type, 500), error, body={"error": error, "error_type": error_type})


class TgiEvents:
    """TGI's event stream and answers, spoken by the chat protocol and the TGI API.

    One event per token; the last carries ``generated_text`` (with ``prefix``
    in front when the request asked for the full text) and ``details`` when
    asked.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def start(self, answer: Answer) -> bytes:
        return b""

    def token(self, answer: Answer, token: GeneratedToken) -> bytes:
        return encode_stream_event(Token(token.id, token.text, token.logprob, token.special))

    def end(self, answer: Answer, token: GeneratedToken) -> bytes:
        parameters = answer.request.parameters
        assert answer.finish_reason is not None
        details = Details(answer.finish_reason, answer.count, answer.seed) if parameters.details else None
        last = Token(token.id, token.text, token.logprob, token.special)
        return encode_stream_event(last, self.generated_text(answer), details)

    def error(self, message: str, error_type: str) -> bytes:
        return encode_error_event(message, error_type)

    def refusal(self, message: str, error_type: str, interrupted: bool) -> ApiError:
        return tgi_error(message, error_type)

    def result(self, answer: Answer, tokens: list[GeneratedToken]) -> Any:
        parameters = answer.request.parameters
        result: dict[str, Any] = {"generated_text": self.generated_text(answer)}
        if parameters.details:
            result["details"] = {
                "finish_reason": answer.finish_reason,
                "generated_tokens": answer.count,
                "seed": answer.seed,
                "prefill": [],
                "tokens": [Token(t.id, t.text, t.logprob, t.special) for t in tokens],
            }
        return result

    def generated_text(self, answer: Answer) -> str:
        return self.prefix + answer.text if answer.request.parameters.return_full_text else answer.text
