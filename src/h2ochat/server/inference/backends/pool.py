"""The context's memory as one pool: places for answers, what each holds, who may grow.

With ``kv_unified`` (llama.cpp's unified KV cache, as llama-server runs it) every answer's
tokens live in one buffer of ``n_ctx`` cells. Each running answer is sure of its share
(``n_ctx / parallel``) and may grow past it, up to the whole context, while cells are free;
a long conversation alone on the server can use all of it. When a new answer needs cells that
others have grown into, the newest growth gives way: a borrower's budget shrinks back towards
its share (its answer ends at ``length`` sooner), never below what it holds already and never
into another answer's share. What cannot fit waits in line.

Cells are reserved when an answer starts (its prompt and its whole budget), so that a decode
never meets a full pool. Free places keep what their memory holds for the next prompt; those
cells are given back, least recently used first, when an answer needs them.

A prompt's start may be held anywhere: by a free place's memory or by an answer running now.
In the unified buffer a place takes it over by reference (``llama_memory_seq_cp`` shares the
cells), so eight questions that start alike read their common start once. With split streams
(``kv_unified = false``) each answer has a fixed share, and only a place's own memory is reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from h2ochat.server.inference.backends.batch import Slot

__all__ = ["Pool"]


@dataclass
class Pool:
    lib: Any  # llama_cpp
    memory: Any  # llama_memory_t
    size: int  # cells in all
    parallel: int
    unified: bool
    prompt_cache: bool
    free: list[int] = field(init=False)  # free places, least recently used first
    cached: list[list[int]] = field(init=False)  # the tokens each place's memory holds
    asked: list[int] = field(init=False)  # how many of them were its last answer's prompt
    reserved: dict[int, int] = field(default_factory=dict)  # place -> cells its running answer may use
    read: int = 0  # prompt tokens decoded
    reused: int = 0  # prompt tokens found in memory

    def __post_init__(self) -> None:
        self.free = list(range(self.parallel))
        self.cached = [[] for _ in range(self.parallel)]
        self.asked = [0] * self.parallel

    @property
    def share(self) -> int:
        """Cells each running answer is sure of."""
        return self.size // self.parallel

    @property
    def capacity(self) -> int:
        """The most one answer may hold: the whole pool when unified, its share otherwise."""
        return self.size if self.unified else self.share

    def in_use(self) -> int:
        return sum(self.reserved.values()) + sum(len(self.cached[place]) for place in self.free)

    # Admission ---------------------------------------------------------------------------------

    def admit(self, slot: Slot, running: list[Slot]) -> bool:
        """Reserve ``slot``'s cells and give it a place; False when it must wait for others to end."""
        if not self.free:
            return False
        need = min(len(slot.prompt) + slot.budget, self.capacity)
        if self.unified:
            short = sum(self.reserved.values()) + need - self.size
            if short > 0 and need <= self.share:
                short -= self._take_back(short, running)
            if short > 0:
                return False
        self._place(slot, running)
        self.reserved[slot.seq_id] = need
        if self.unified:
            self._evict(self.in_use() - self.size)
        return True

    def _take_back(self, wanted: int, running: list[Slot]) -> int:
        """Shrink the newest borrowers' budgets (never below their share or what they hold): the
        cells given back, at most ``wanted``."""
        given = 0
        for slot in reversed(running):
            if given >= wanted:
                break
            held = len(slot.prompt) + slot.generated + 1  # and the token it is about to decode
            floor = max(self.share, held)
            spare = self.reserved[slot.seq_id] - floor
            if spare <= 0:
                continue
            back = min(spare, wanted - given)
            self.reserved[slot.seq_id] -= back
            slot.budget = self.reserved[slot.seq_id] - len(slot.prompt)
            given += back
        return given

    def _evict(self, excess: int) -> None:
        """Forget free places' memory, least recently used first, until ``excess`` cells are back."""
        for place in list(self.free):
            if excess <= 0:
                return
            if self.cached[place]:
                excess -= len(self.cached[place])
                self.forget(place)

    # Places ------------------------------------------------------------------------------------

    def _place(self, slot: Slot, running: list[Slot]) -> None:
        """Give ``slot`` a free place, and as much of its prompt's start as memory holds.

        A prompt that starts with the whole prompt a free place last answered is that
        conversation moving on (a retry, the next turn): it takes that place back, the longest
        such, as llama-server takes the slot most like the prompt. Otherwise it takes the place
        whose memory costs least to give up: taking a place throws away what it holds past the
        common start, and each is scored by what the prompt can reuse less what is thrown away
        (in the unified pool the longest start held anywhere is shared in, so the place that
        loses least wins; with split streams only the place's own memory counts). So a short new
        chat never wipes a long conversation that merely shares its system turn, and eight people
        pressing Retry at once do not wipe each other's memory. Ties go to the place whose own
        memory reaches furthest, then to the least recently used.
        """
        prompt, free = slot.prompt, self.free
        # What every place's memory, free or answering now, holds of the prompt's start.
        held = {place: self._common(tokens, prompt) for place, tokens in self._holders(running)}
        anywhere = max(held.values(), default=0)

        def value(place: int) -> tuple[int, int]:
            reuse = anywhere if self.unified else held[place]
            return reuse - (len(self.cached[place]) - held[place]), held[place]

        same = [place for place in free if self.cached[place] and held[place] >= self.asked[place]]
        place = max(same, key=held.__getitem__) if same else max(free, key=value)  # max: the first of equals
        free.remove(place)
        slot.seq_id = place  # the slot holds the place now: a failure below gives it back
        start, source = held[place], place
        if self.unified:
            for other, common in held.items():
                if common > start:
                    start, source = common, other
        # The last prompt token is always decoded: its logits give the first answer token.
        reuse = min(start, len(prompt) - 1)
        self.cached[place] = []
        if source != place:
            self.lib.llama_memory_seq_rm(self.memory, place, 0, -1)
            self.lib.llama_memory_seq_cp(self.memory, source, place, 0, reuse)
        else:
            self.lib.llama_memory_seq_rm(self.memory, place, reuse, -1)
        slot.read = reuse
        self.reused += reuse
        self.read += len(prompt) - reuse

    def _holders(self, running: list[Slot]) -> list[tuple[int, list[int]]]:
        """Every place with the tokens its memory holds from position 0: free places first (their
        whole memory), then running answers (the prompt read so far)."""
        held = [(place, self.cached[place]) for place in self.free]
        held += [(slot.seq_id, slot.prompt[: slot.read]) for slot in running if slot.seq_id != -1]
        return held

    def _common(self, a: list[int], b: list[int]) -> int:
        """How many tokens ``a`` and ``b`` share from the start (none without the prompt cache)."""
        if not self.prompt_cache:
            return 0
        count = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            count += 1
        return count

    # Release -----------------------------------------------------------------------------------

    def release(self, slot: Slot) -> None:
        """The answer is over: its place is free, keeping what its memory holds for the next prompt
        (every token but the last sampled, which was never decoded), or forgetting it."""
        place = slot.seq_id
        if place < 0:
            return
        self.reserved.pop(place, None)
        self.free.append(place)
        # Forgotten first: if clearing fails, the next prompt there reuses nothing, and _place
        # clears the whole sequence before reading it.
        self.cached[place] = []
        kept = slot.prompt[: slot.read] + slot.sampled[:-1] if self.prompt_cache else []
        self.lib.llama_memory_seq_rm(self.memory, place, len(kept), -1)
        self.cached[place], self.asked[place] = kept, slot.read

    def forget(self, place: int) -> None:
        self.cached[place] = []
        self.lib.llama_memory_seq_rm(self.memory, place, 0, -1)
