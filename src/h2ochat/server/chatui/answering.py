"""What both generations of the chat-ui protocol do to answer a message: check, fit, store, stream, save.

The 2023 handlers (``messages``) and the current ones (``current_messages``) differ in how a message
names its place in the tree and in how the answer is worded on the wire (a :class:`Dialect`); the
prompt of a branch, the rate limit, the fitting, the checkpoints and the final save are the same, so
they live here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from h2ochat.protocol.parameters import Parameters, request_parameters
from h2ochat.protocol.runs import Generation
from h2ochat.server.chatui.runs import RUNS, Run, relay
from h2ochat.server.edge.http import CONFIG, MODELS, SESSION, STORE, ApiError, limit_rate
from h2ochat.server.edge.metrics import METRICS
from h2ochat.server.edge.quotas import (
    check_sign_in,
    check_tokens,
    count_accepted,
    limits_of,
    metered,
    record_answer,
)
from h2ochat.server.inference.backends import InputTooLong
from h2ochat.server.inference.runtime import Fitted, ModelRuntime
from h2ochat.server.storage import Conversation, MessageRow, Store
from h2ochat.server.streaming import Answer, Dialect, Outcome, admit, answer_loop, stream_answer

__all__ = ["branch", "count_message", "fit", "run_for", "saved_parameters", "stream_and_save"]

log = logging.getLogger("h2ochat.server")

SavedText = Callable[[Answer, Outcome], str]
"""What is saved as the answer's text, from how it ended (default: the outcome's text)."""


def branch(rows: dict[str, MessageRow], path: list[str]) -> tuple[str, list[dict[str, str]]]:
    """What the model is sent for a path from the root: the system prompt, and the messages after it."""
    return rows[path[0]].content, [{"role": rows[i].role, "content": rows[i].content} for i in path[1:]]


async def count_message(request: web.Request, runtime: ModelRuntime, dialect: Dialect) -> None:
    """Counted once the message is known to be acceptable; a full queue refuses before anything is stored."""
    per_minute = limits_of(request).rate_limit_per_minute
    await limit_rate(
        request.app[STORE],
        f"messages:{request[SESSION]}",
        per_minute,
        f"messages: this server accepts {per_minute} per minute per session",
    )
    await check_sign_in(request)
    await check_tokens(request)
    admit(runtime, dialect)
    await count_accepted(request)


def saved_parameters(request: web.Request, runtime: ModelRuntime, conversation: Conversation) -> Parameters:
    """Where the wire carries no sampling parameters (today's chat-ui): the conversation's settings
    over the model's defaults."""
    try:
        return request_parameters(
            runtime.defaults,
            dict(conversation.settings) or None,
            ceiling=request.app[CONFIG].max_new_tokens_limit,
        )
    except ValueError as exc:
        raise ApiError(400, f"This conversation's settings are not usable: {exc}") from None


async def fit(
    runtime: ModelRuntime, messages: list[dict[str, str]], parameters: Any, *, system: str, prefix: str = ""
) -> Fitted:
    try:  # a message the model cannot take is refused before it is stored, too
        return await runtime.fit(messages, parameters, prefix, system=system)
    except InputTooLong as exc:
        raise ApiError(400, str(exc)) from None


@contextlib.asynccontextmanager
async def run_for(
    request: web.Request, conversation: Conversation, answer_id: str, generation: Generation, run_id: str | None = None
) -> AsyncIterator[str | None]:
    """The run of an answer about to be stored (None when answers are not resumable): recorded first,
    so that a session past ``max_running_answers`` is refused before anything is stored; ended as an
    error if storing the exchange fails."""
    config, store = request.app[CONFIG], request.app[STORE]
    if not config.resumable_answers:
        yield None
        return
    run_id = run_id or str(uuid.uuid4())
    await store.begin_run(
        run_id, conversation.id, request[SESSION], answer_id, generation, limit=config.max_running_answers
    )
    try:
        yield run_id
    except BaseException:
        await asyncio.shield(store.end_run(run_id, "error", 1))
        raise


async def stream_and_save(
    request: web.Request,
    runtime: ModelRuntime,
    conversation: Conversation,
    fitted: Fitted,
    answer_id: str,
    dialect: Dialect,
    *,
    run_id: str | None,
    generation: Generation = "2023",
    headers: dict[str, str] | None = None,
    keep_alive: bytes | None = None,
    before: MessageRow | None = None,
    saved_text: SavedText | None = None,
) -> web.StreamResponse:
    """Stream and save the answer; ``before`` is the answer being continued, whose text and tokens it extends.

    With a run (:func:`run_for`), the answer is generated by a task of its own and this client is one
    reader of it; without, the client leaving stops it.
    """
    app = request.app
    # Beside the events: how many earlier messages the model did not see.
    headers = {"H2ochat-Left-Out": str(fitted.left_out), **(headers or {})}
    answering = functools.partial(
        _answer_and_save, app, runtime, conversation, fitted, answer_id, before, saved_text, metered(request)
    )
    if run_id is None:
        streamed: list[web.StreamResponse] = []

        async def to_client(answer: Answer) -> Outcome:
            response, outcome = await stream_answer(request, answer, dialect, headers, keep_alive=keep_alive)
            streamed.append(response)
            return outcome

        await answering(to_client)
        return streamed[0]
    run = Run(run_id, conversation.id, answer_id, generation)
    app[RUNS].start(
        app[STORE], run, answering(lambda answer: answer_loop(answer, dialect, run.send)), app[CONFIG].run_log_interval
    )
    return await relay(request, run, headers, keep_alive)


async def _answer_and_save(
    app: web.Application,
    runtime: ModelRuntime,
    conversation: Conversation,
    fitted: Fitted,
    answer_id: str,
    before: MessageRow | None,
    saved_text: SavedText | None,
    counted: bool,
    produce: Callable[[Answer], Awaitable[Outcome]],
) -> Outcome:
    """Generate the answer through ``produce``, checkpointing it, and save how it ended (and, ``counted``,
    add it to the session's use: edge/quotas.py)."""
    store, config = app[STORE], app[CONFIG]
    started = time.monotonic()
    with app[MODELS].track(conversation.id) as generation:
        answer = Answer(runtime, fitted.request, generation, app.get(METRICS))
        checkpoints = asyncio.ensure_future(
            _checkpoints(store, conversation.id, answer_id, answer, config.checkpoint_interval, before)
        )
        outcome = answer.outcome("client disconnected")  # unless the loop says otherwise
        try:
            outcome = await produce(answer)
        finally:
            checkpoints.cancel()
            text = outcome.text if saved_text is None else saved_text(answer, outcome)
            # Shielded: an answer must be saved even if this task is being cancelled.
            await asyncio.shield(
                store.finish_answer(
                    conversation.id,
                    answer_id,
                    _text(before) + text,
                    finish_reason=outcome.finish_reason,
                    interruption=outcome.interruption,
                    generated_tokens=_tokens(before) + outcome.generated_tokens,
                )
            )
            if counted:
                await asyncio.shield(record_answer(app, conversation.session_id, outcome.generated_tokens))
    elapsed = time.monotonic() - started
    log.info(
        "generated model=%s tokens=%d seconds=%.2f tokens/s=%.1f end=%s",
        runtime.config.name,
        outcome.generated_tokens,
        elapsed,
        outcome.generated_tokens / elapsed if elapsed else 0.0,
        outcome.finish_reason or f"interrupted ({outcome.interruption})",
    )
    return outcome


async def _checkpoints(
    store: Store, conversation_id: str, answer_id: str, answer: Answer, every: float, before: MessageRow | None
) -> None:
    """Save the answer so far every ``every`` seconds, so that a crash loses at most that much of it."""
    saved = ""
    while True:
        await asyncio.sleep(every)
        if answer.text != saved:
            saved = answer.text
            await store.save_partial(conversation_id, answer_id, _text(before) + saved, _tokens(before) + answer.count)


def _text(before: MessageRow | None) -> str:
    return before.content if before is not None else ""


def _tokens(before: MessageRow | None) -> int:
    return (before.generated_tokens or 0) if before is not None else 0
