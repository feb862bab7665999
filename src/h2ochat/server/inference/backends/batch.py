"""Continuous batching for llama.cpp: one context, one sequence per answer, one batch per step.

A :class:`Scheduler` owns a llama.cpp context whose memory holds ``parallel``
sequences in one pool of ``n_ctx`` cells (:mod:`.pool`: each answer sure of its
share, ``n_ctx / parallel``, and free to grow past it while cells are free; or,
with ``unified = False``, llama.cpp's split streams of one share each).
A worker thread runs the steps. A step decodes one batch holding the last
sampled token of every answer that is generating and the next chunks of the
prompts still being read, up to the step's token budget, so a long prompt
delays the others' next token by one chunk at most.

Every answer has its own sampler chain (penalties, then greedy or top-k,
typical, top-p, temperature and a seeded draw), so its parameters and seed
hold whatever else shares the batch. A new answer joins at the next step; an
answer that ends, or whose consumer cancels it, gives its place to the next
one waiting at once. With ``prompt_cache`` the place keeps what its memory
holds, and a new answer starts from the longest start of its prompt that
memory holds (:meth:`.pool.Pool._place` says where): a chat's next message,
resent with the whole chat before it, reads only what is new (llama.cpp's
server does the same).

The event loop never waits on llama.cpp: :meth:`Scheduler.submit` and
:meth:`Scheduler.cancel` only take a lock for a moment, and a step's tokens
go back in one ``hand_over`` call (``call_soon_threadsafe`` in the backend).
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from h2ochat.protocol.parameters import Parameters
from h2ochat.server.inference.backends import BackendError, GeneratedToken
from h2ochat.server.inference.backends.pool import Pool
from h2ochat.server.inference.backends.sampling import sampler_chain

__all__ = ["Outcome", "Scheduler", "Slot"]

log = logging.getLogger("h2ochat.server")

# Tokens per step while others are generating: a prompt chunk costs them this much delay.
_CHUNK = 128
# Tokens per step at most (alone, a prompt is read in chunks this large).
_BATCH = 512
# Seconds an idle worker waits for more requests before its first step.
_GATHER = 0.003
# Recent tokens/s is counted over this many seconds.
_WINDOW = 10.0


Outcome = tuple["Slot", GeneratedToken | BaseException]


@dataclass(eq=False)
class Slot:
    """One answer in the scheduler: its prompt, sampling, budget and where it stands."""

    prompt: list[int]
    parameters: Parameters
    budget: int  # new tokens at most (max_new_tokens, or what the context has room for); the pool may shrink it
    emit: Callable[[GeneratedToken | BaseException], None]  # called by the hand-over, on the consumer's side
    seq_id: int = -1
    read: int = 0  # prompt tokens in the memory so far (reused or decoded)
    last: int | None = None  # the sampled token to decode next
    generated: int = 0
    sampled: list[int] = field(default_factory=list)
    cancelled: bool = False
    sampler: Any = None
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def position(self) -> int:
        return self.read + self.generated - 1 if self.last is not None else self.read


class Scheduler:
    """Runs every answer of one model in one llama.cpp context, batched step by step.

    ``llama`` is a loaded ``llama_cpp.Llama``: its model, vocabulary and thread
    settings are used; the context here is a second one, sized ``n_ctx`` for
    ``parallel`` sequences.
    """

    def __init__(
        self,
        llama: Any,
        *,
        n_ctx: int,
        parallel: int,
        sampling: Callable[[Parameters], dict[str, Any]],
        hand_over: Callable[[list[Outcome]], None],
        prompt_cache: bool = True,
        unified: bool = True,
    ):
        import llama_cpp

        self._lib = llama_cpp
        self._llama = llama
        self._sampling = sampling
        self._deliver = hand_over
        self._outbox: list[Outcome] = []
        self.parallel = parallel
        params = type(llama.context_params).from_buffer_copy(llama.context_params)
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = _BATCH
        params.n_seq_max = parallel
        params.kv_unified = unified  # one pool (.pool), or a fixed share per answer
        params.no_perf = True
        # llama.cpp's own default (llama-cpp-python turns it off): on the 2-core machine this was
        # built on, 8 answers at once gave 257-261 tokens/s with it and 233-235 without.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
        self._ctx = llama_cpp.llama_init_from_model(llama.model, params)
        if not self._ctx:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx} tokens for {parallel} sequences")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(_BATCH, 0, 1)
        self._vocab = llama._model.vocab
        self._n_vocab = llama.n_vocab()
        self._pieces: dict[int, tuple[bytes, bool]] = {}
        cells = llama_cpp.llama_n_ctx(self._ctx)
        self._pool = Pool(llama_cpp, self._memory, cells, parallel, unified, prompt_cache)
        #: Tokens each answer is sure of (prompt and answer), and the most one may hold.
        self.share, self.capacity = self._pool.share, self._pool.capacity
        self._waiting: deque[Slot] = deque()
        self._running: list[Slot] = []
        self._recent: deque[tuple[float, int]] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="h2ochat-llama-batch", daemon=True)
        self._thread.start()

    # Called from the event loop --------------------------------------------------------------

    def submit(self, slot: Slot) -> None:
        with self._wake:
            if self._closing:
                raise BackendError("the model is shutting down")
            self._waiting.append(slot)
            self._wake.notify()

    def cancel(self, slot: Slot) -> None:
        """End ``slot`` (its consumer left or stopped it): its place is freed before the next step."""
        with self._wake:
            slot.cancelled = True
            self._wake.notify()

    def stats(self) -> dict[str, Any]:
        """Running and waiting answers, free places, and tokens/s over the last few seconds."""
        with self._wake:
            now = time.monotonic()
            recent = sum(count for when, count in self._recent if when >= now - _WINDOW)
            return {
                "parallel": self.parallel,
                "running": len(self._running),
                "waiting": len(self._waiting),
                "free": len(self._pool.free),
                "context_per_answer": self.share,
                "context_max": self.capacity,
                "cells_reserved": sum(self._pool.reserved.values()),
                "tokens_per_second": round(recent / _WINDOW, 1),
                "prompt_tokens_read": self._pool.read,
                "prompt_tokens_reused": self._pool.reused,
            }

    def close(self) -> None:
        """Stop the worker (every answer still open gets an error), then free llama.cpp's memory."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        for slot in [*self._waiting, *self._running]:
            self._outbox.append((slot, BackendError("the model is shutting down")))
            self._release(slot)
        self._hand_over()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)

    # The worker thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        """Rounds until closed. Whatever a round raises ends the answers it touched, never the worker:
        a dead worker would leave every later answer waiting forever."""
        while True:
            try:
                if not self._round():
                    return
            except Exception as exc:
                log.exception("the llama.cpp worker failed; its running answers end with an error")
                self._fail(list(self._running), exc)

    def _round(self) -> bool:
        """Wait for work, admit, step, hand the tokens over; False once closing."""
        with self._wake:
            while not self._closing and not self._waiting and not self._running:
                self._wake.wait()
            if not self._running:  # idle until now: requests sent together arrive within a ms or so,
                self._wake.wait_for(lambda: self._closing, _GATHER)  # and read together, one decode
            if self._closing:
                return False
            self._admit()
        if self._running:
            try:
                self._step()
            except Exception as exc:  # a llama.cpp failure ends the answers in that step, not the worker
                log.exception("a batched llama.cpp step failed")
                self._fail(list(self._running), exc)
        self._hand_over()
        return True

    def _fail(self, slots: list[Slot], exc: Exception) -> None:
        """End ``slots`` with an error; their places forget their memory (what it holds is unknown)."""
        for slot in slots:
            self._outbox.append((slot, BackendError(f"llama.cpp failed: {exc}")))
            slot.read, slot.sampled = 0, []
            self._finish(slot)
        try:
            self._hand_over()
        except Exception:
            log.exception("the failed answers' errors could not be handed over")

    def _hand_over(self) -> None:
        """Give the step's tokens to their consumers in one call: one wake-up of the event loop a
        step, not one a token."""
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            self._deliver(outbox)

    def _admit(self) -> None:
        """Drop cancelled answers; give places to those waiting, first come first served: the
        first waits until the pool has room for it, and those behind it wait too."""
        for slot in [slot for slot in self._running if slot.cancelled]:
            self._finish(slot)
        self._waiting = deque(slot for slot in self._waiting if not slot.cancelled)
        while self._waiting and self._pool.free:
            slot = self._waiting.popleft()
            others = list(self._running)
            self._running.append(slot)  # from here on, a failure frees its place (_fail, _finish)
            try:
                if not self._pool.admit(slot, others):
                    self._running.remove(slot)
                    self._waiting.appendleft(slot)
                    return
                slot.sampler = sampler_chain(
                    self._lib, self._sampling(slot.parameters), self._n_vocab, slot.parameters.seed
                )
            except Exception as exc:  # this answer cannot start; the others go on
                log.exception("an answer could not join the batch")
                self._fail([slot], exc)
                continue
            log.debug("answer joined the batch: %d running, %d waiting", len(self._running), len(self._waiting))

    def _step(self) -> None:
        """One step, one decode: every generating answer's next token and prompt chunks up to the budget.

        In sequence order: llama.cpp splits a batch whose sequences come in another
        order into several, which took 53 ms a step for 8 answers instead of 30. One
        decode for everything also beat a decode per prompt (8 prompts' last 4
        tokens: 80 ms against 118; bench/README.md).
        """
        work = [(slot, 1) for slot in self._running if slot.last is not None]
        budget = _CHUNK if work else _BATCH
        for slot in self._running:
            unread = len(slot.prompt) - slot.read
            if unread > 0 and budget > 0:
                work.append((slot, min(unread, budget)))
                budget -= work[-1][1]
        index, outputs = 0, []
        for slot, take in sorted(work, key=lambda item: item[0].seq_id):
            if slot.last is not None:
                self._put(index, slot.last, slot.position, slot.seq_id, True)
                outputs.append((index, slot))
                index += 1
                continue
            for position in range(slot.read, slot.read + take):
                last = position == len(slot.prompt) - 1
                self._put(index, slot.prompt[position], position, slot.seq_id, last)
                if last:  # its logits give the answer's first token
                    outputs.append((index, slot))
                index += 1
            slot.read += take
        self._decode(index, outputs)

    def _decode(self, count: int, outputs: list[tuple[int, Slot]]) -> None:
        """Decode the batch's first ``count`` tokens, then sample each answer at its output index."""
        self._batch.n_tokens = count
        status = self._lib.llama_decode(self._ctx, self._batch)
        if status != 0:
            raise BackendError(f"llama_decode returned {status}")
        for index, slot in outputs:
            self._accept(slot, self._lib.llama_sampler_sample(slot.sampler, self._ctx, index))
        if outputs:
            with self._wake:
                now = time.monotonic()
                self._recent.append((now, len(outputs)))
                while self._recent and self._recent[0][0] < now - _WINDOW:
                    self._recent.popleft()

    def _put(self, index: int, token: int, position: int, seq_id: int, logits: bool) -> None:
        batch = self._batch
        batch.token[index] = token
        batch.pos[index] = position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq_id
        batch.logits[index] = logits

    def _accept(self, slot: Slot, token: int) -> None:
        """Hand a sampled token to the answer's consumer; end the answer on EOS or its budget."""
        prompt_tokens = len(slot.prompt)
        slot.generated += 1
        slot.sampled.append(token)
        if slot.cancelled:
            return
        piece, end = self._piece(token)
        if end:
            # Bytes of a character the answer never finished are kept, as U+FFFD: on the end token,
            # then not special, since a client adds only non-special tokens' text to the answer.
            rest = slot.decoder.decode(b"", final=True)
            text, special = (rest, False) if rest else (piece.decode("utf-8", "replace"), True)
            self._outbox.append((slot, GeneratedToken(token, text, None, special, "eos_token", prompt_tokens)))
            self._finish(slot)
            return
        text = slot.decoder.decode(piece)
        if slot.generated >= slot.budget:
            text += slot.decoder.decode(b"", final=True)
            self._outbox.append((slot, GeneratedToken(token, text, None, False, "length", prompt_tokens)))
            self._finish(slot)
            return
        slot.last = token
        self._outbox.append((slot, GeneratedToken(token, text, prompt_tokens=prompt_tokens)))

    def _piece(self, token: int) -> tuple[bytes, bool]:
        """A token's bytes and whether it ends generation, looked up in llama.cpp once per token id.

        Every call into llama.cpp gives up Python's lock and must win it back; with
        the event loop busy writing the streams, that wait came to a few ms per call,
        so the worker makes as few calls per step as it can.
        """
        known = self._pieces.get(token)
        if known is None:
            end = bool(self._lib.llama_vocab_is_eog(self._vocab, token))
            known = self._pieces[token] = (self._llama.detokenize([token], special=end), end)
        return known

    def _finish(self, slot: Slot) -> None:
        """The answer is over: its sequence leaves the memory and its place is free for the next."""
        with self._wake:
            if slot not in self._running:
                return  # finished already: its place may be another answer's by now
            self._running.remove(slot)
            try:
                self._release(slot)
            except Exception:  # the place is free all the same, and forgotten: _place clears it whole
                log.exception("clearing a finished answer's memory failed")

    def _release(self, slot: Slot) -> None:
        """Free the slot's sampler and its place (which keeps its memory for the next prompt)."""
        sampler, slot.sampler = slot.sampler, None
        try:
            self._pool.release(slot)
        finally:
            if sampler is not None:
                self._lib.llama_sampler_free(sampler)
