"""The TGI event streams the benchmarks decode and replay, and current chat-ui's NDJSON form of the same answer.

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

__all__ = ["PIECES", "Stream", "chatui_lines", "chunked", "make_stream"]

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


def chunked(stream: Stream | list[bytes], size: int | None) -> list[bytes]:
    """The stream as a client reads it: one event (or line) per read (``size=None``) or ``size`` bytes per read."""
    events = stream.events if isinstance(stream, Stream) else stream
    if size is None:
        return list(events)
    body = b"".join(events)
    return [body[start : start + size] for start in range(0, len(body), size)]


# Current chat-ui writes a keep-alive every 100 ms; at the 50 tokens/s of a small model on a CPU
# (bench/README.md, SmolLM2) that is one after every fifth token.
CHATUI_TOKENS_PER_KEEP_ALIVE = 5


def chatui_lines(stream: Stream, title: str = "What is the capital of") -> list[bytes]:
    """The same answer as current chat-ui streams it (docs/protocol.md section 11), one item per line.

    ``status:started``, ``title``, a NUL-padded ``stream`` line per token with a
    keep-alive after every fifth, ``finalAnswer``, then the 4096 spaces that
    open the ``status:finished`` line, as chat-ui 0.20.0 writes them.
    """
    lines = [_line({"type": "status", "status": "started"}), _line({"type": "title", "title": title})]
    for index, text in enumerate(stream.texts, 1):
        lines.append(_line({"type": "stream", "token": text + "\0" * max(0, 16 - _utf16_units(text))}))
        if index % CHATUI_TOKENS_PER_KEEP_ALIVE == 0:
            lines.append(_line({"type": "status", "status": "keepAlive"}))
    lines.append(_line({"type": "finalAnswer", "text": stream.answer, "interrupted": False}))
    lines.append(b" " * 4096 + _line({"type": "status", "status": "finished"}))
    return lines


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2  # JavaScript's padEnd counts these


def _line(payload: dict[str, object]) -> bytes:
    # JSON.stringify: compact, raw UTF-8, NUL as \u0000 (which json.dumps also writes).
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


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
