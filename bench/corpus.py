"""The TGI event streams the benchmarks decode and replay.

The events are written here with the standard library, byte for byte as
TGI writes them (docs/protocol.md section 4), and not with h2ochat's encoder, so
that the code under test never produces its own input.  Token texts are
drawn from a fixed list of realistic pieces (leading spaces, punctuation,
newlines, quotes, accented letters, CJK, emoji) with a fixed seed, so every
run and every process sees the same stream.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

__all__ = ["PIECES", "Stream", "chunked", "make_stream"]

# Roughly what an English-language model emits, with the characters that need
# JSON escapes or multi-byte UTF-8 mixed in at a realistic rate.
PIECES: tuple[str, ...] = (
    *(" the", " of", " and", " to", " a", " in", " is", " that", " for", " it"),
    *(" model", " Paris", " capital", " France", " answer", " question", " because", " however"),
    *("ing", "ed", "ly", "s", "er", "tion", "ation", " un", " re", " pre"),
    *(",", ".", ":", ";", "!", "?", " (", ")", " -", "'s"),
    *("\n", "\n\n", "\t", ' "', '"', "\\", " 1", "2", "0", " 2023"),
    *(" café", " naïve", " résumé", " Straße", "—", " …", " «", "»"),
    *(" 東京", "は", "日本", " 北京", " Москва", " 🙂", " 🚀", "ünd"),
)

_EOS = "</s>"


@dataclass(frozen=True)
class Stream:
    """One answer as TGI sends it: the encoded events and the texts a client must yield."""

    events: list[bytes]  # one ``data:{...}\\n\\n`` per token, the last one with generated_text
    texts: list[str]  # the non-special token texts, in order

    @property
    def body(self) -> bytes:
        return b"".join(self.events)

    @property
    def answer(self) -> str:
        return "".join(self.texts)


def make_stream(tokens: int, seed: int = 5) -> Stream:
    """An answer of ``tokens`` events: ``tokens - 1`` ordinary tokens, then the EOS event."""
    if tokens < 1:
        raise ValueError("a stream needs at least its final event")
    rng = random.Random(seed)
    texts = rng.choices(PIECES, k=tokens - 1)
    events = [_event(rng.randrange(3, 50_000), text, _logprob(rng)) for text in texts]
    details = {"finish_reason": "eos_token", "generated_tokens": tokens, "seed": None}
    events.append(_event(2, _EOS, _logprob(rng), special=True, generated_text="".join(texts), details=details))
    return Stream(events, texts)


def chunked(stream: Stream, size: int | None) -> list[bytes]:
    """The stream as a client reads it: one event per read (``size=None``) or ``size`` bytes per read."""
    if size is None:
        return list(stream.events)
    body = stream.body
    return [body[start : start + size] for start in range(0, len(body), size)]


def _logprob(rng: random.Random) -> float:
    return round(-rng.expovariate(2.0), 4)


def _event(
    token_id: int,
    text: str,
    logprob: float,
    *,
    special: bool = False,
    generated_text: str | None = None,
    details: dict[str, object] | None = None,
) -> bytes:
    payload = {
        "token": {"id": token_id, "text": text, "logprob": logprob, "special": special},
        "generated_text": generated_text,
        "details": details,
    }
    # TGI (serde_json) writes compact JSON with raw UTF-8, which these options reproduce.
    return b"data:" + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
