"""Benchmark 5: the embedded model through h2ochat (server + client) against llama-cpp-python alone.

``h2ochat``: ``H2oSession`` (reused) -> the h2ochat server (its own process,
default configuration: embedded SmolLM2) -> llama-cpp-python.
``direct``: llama-cpp-python called in this process on the same GGUF file,
with the llama.cpp context settings of the server's batching scheduler (flash
attention on, batches of 512 tokens), the prompt the server builds (the GGUF
chat template, the default preprompt as a system message) and the same
sampling arguments (``sampling_arguments``, greedy).

Each repetition uses a new prompt, the same for both, so that the time to
first token includes evaluating the prompt (llama-cpp-python reuses the
cached prefix of a repeated prompt).  Greedy decoding makes both produce
the same text, which is checked.
"""

from __future__ import annotations

import asyncio
import codecs
import time
from dataclasses import dataclass
from typing import Any

from bench.common import Section, Target, start_child
from h2ochat import H2oSession
from h2ochat.protocol.parameters import Parameters
from h2ochat.server.config import DEFAULT_MODEL_ID, default_models

__all__ = ["run"]

OURS = "h2ochat (server + H2oSession)"
DIRECT = "llama-cpp-python direct"
TARGET = 0.95


@dataclass
class Generation:
    text: str
    tokens: int
    first: float  # seconds from the call to the first token
    total: float  # seconds from the call to the last token

    @property
    def rate(self) -> float:
        """Tokens per second after the first one: the model's generation speed as the caller sees it."""
        return (self.tokens - 1) / (self.total - self.first) if self.tokens > 1 else 0.0


def prompt(index: int) -> str:
    return f"Write a long story about a robot named Unit {index + 1} who learns to paint."


def run(*, max_new_tokens: int = 128, repeats: int = 5) -> Section:
    section = Section(
        "model",
        f"5. Embedded model (SmolLM2-135M, greedy, {max_new_tokens} new tokens): through h2ochat vs direct",
        "h2ochat vs direct (higher is better)",
        parameters={"max_new_tokens": max_new_tokens, "repeats": repeats, "model": DEFAULT_MODEL_ID},
    )
    direct = _Direct(max_new_tokens)
    try:
        with start_child("bench.server", "--llama", ready_timeout=300) as server:
            ours, theirs = asyncio.run(_measure(server.url, direct, max_new_tokens, repeats))
    finally:
        direct.llama.close()
    for case, unit, pick, higher in (
        ("tokens per second", "tokens/s", lambda g: g.rate, True),
        ("time to first token", "ms", lambda g: g.first * 1000, False),
        ("whole answer", "ms", lambda g: g.total * 1000, False),
    ):
        section.add(case, OURS, [pick(g) for g in ours], unit)
        section.add(case, DIRECT, [pick(g) for g in theirs], unit)
        section.against(case, DIRECT, higher_is_better=higher)
    share = section.row("tokens per second", OURS).ratio or 0.0
    section.targets.append(
        Target(
            f"h2ochat ≥ {TARGET} x direct tokens/s",
            share >= TARGET,
            f"{share:.3f} x direct (time to first token: {section.row('time to first token', OURS).ratio:.3f})",
        )
    )
    section.notes += [
        f"Tokens per answer: {ours[0].tokens} (both sides produced identical text in every repetition).",
        "tokens/s counts the tokens after the first, from the first token's arrival to the last's; the time to "
        "first token includes building and evaluating the prompt (and, for h2ochat, the HTTP message step).",
        "Repetitions alternate between the two sides (a warm-up answer on each is not counted); ratios are medians "
        "of the per-repetition ratios.",
        "The time to first token is mostly llama.cpp evaluating the prompt, with as many threads as cores (its "
        "default n_threads_batch): on a busy 2-core machine that swings from 0.1 s to several seconds, on both sides.",
    ]
    return section


async def _measure(
    url: str, direct: _Direct, max_new_tokens: int, repeats: int
) -> tuple[list[Generation], list[Generation]]:
    ours: list[Generation] = []
    theirs: list[Generation] = []
    parameters = {"do_sample": False, "repetition_penalty": 1.0, "max_new_tokens": max_new_tokens}
    async with H2oSession(url) as session:
        await _through_h2ochat(session, "Say hello.", parameters)  # warm-up on both sides
        direct.generate("Say hello.")
        for index in range(repeats):
            mine = await _through_h2ochat(session, prompt(index), parameters)
            base = direct.generate(prompt(index))
            if mine.text != base.text:
                raise AssertionError(
                    f"h2ochat and llama-cpp-python answered prompt {index} differently; the comparison is void:\n"
                    f"{mine.text[:200]!r}\n{base.text[:200]!r}"
                )
            ours.append(mine)
            theirs.append(base)
    return ours, theirs


async def _through_h2ochat(session: H2oSession, text: str, parameters: dict[str, Any]) -> Generation:
    start = time.perf_counter()
    first = 0.0
    parts: list[str] = []
    result = session.stream([{"role": "user", "content": text}], DEFAULT_MODEL_ID, **parameters)
    async for token in result:
        if not parts:
            first = time.perf_counter() - start
        parts.append(token)
    total = time.perf_counter() - start
    # The server counts the EOS token when there is one; the client never sees its text.
    return Generation("".join(parts), len(parts), first, total)


def _load_like_the_scheduler() -> Any:
    """The embedded model in llama-cpp-python with the scheduler's context settings.

    llama-cpp-python turns flash attention off and the scheduler turns it on (llama.cpp's default);
    their arithmetic differs in the last bits, enough for greedy answers to part after a few dozen
    tokens, and the comparison needs the same text on both sides.
    """
    import llama_cpp

    from h2ochat.server.inference.backends.batch import _BATCH
    from h2ochat.server.inference.backends.llama import embedded_gguf, extra_buffers_disabled

    with extra_buffers_disabled():
        return llama_cpp.Llama(
            model_path=embedded_gguf(), n_ctx=4096, n_batch=_BATCH, n_ubatch=_BATCH, flash_attn=True, verbose=False
        )


class _Direct:
    """llama-cpp-python on its own, set up exactly as the server sets up the default model."""

    def __init__(self, max_new_tokens: int) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from h2ochat.server.inference.backends.llama import sampling_arguments

        self.llama = _load_like_the_scheduler()
        llama = self.llama
        bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "replace")
        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "replace")
        self._bos = bos
        self._template = Jinja2ChatFormatter(
            template=llama.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos, add_generation_prompt=True
        )
        self._preprompt = default_models()[0].preprompt
        # What the server's parameters become for these request values (over the model's recommended ones).
        self._parameters = Parameters(do_sample=False, repetition_penalty=1.0, max_new_tokens=max_new_tokens)
        self._sampling = sampling_arguments(self._parameters)

    def generate(self, text: str) -> Generation:
        import llama_cpp

        llama = self.llama
        start = time.perf_counter()
        messages = [{"role": "system", "content": self._preprompt}, {"role": "user", "content": text}]
        rendered = self._template(messages=messages).prompt
        tokens = llama.tokenize(rendered.encode("utf-8"), add_bos=not rendered.startswith(self._bos), special=True)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        vocab = llama._model.vocab
        budget = self._parameters.max_new_tokens or 1024
        parts: list[str] = []
        first = 0.0
        for token in llama.generate(tokens, **self._sampling):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            parts.append(decoder.decode(llama.detokenize([token])))
            if len(parts) == 1:
                first = time.perf_counter() - start
            if len(parts) >= budget:
                parts[-1] += decoder.decode(b"", final=True)
                break
        total = time.perf_counter() - start
        return Generation("".join(parts), len(parts), first, total)
