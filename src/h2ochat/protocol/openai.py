"""OpenAI's chat-completion shapes, and their mapping to TGI's parameters. Pure: no I/O.

The server's ``/v1`` API encodes these structs, the ``openai`` backend reads
upstream chunks with them, and :class:`h2ochat.Client` returns them, so all
three agree on one definition. Fields an engine adds (``system_fingerprint``,
``tool_calls``...) are ignored when decoding.

OpenAI's options as TGI parameters (:func:`tgi_parameters`):

==========================================  ===============================================
``max_tokens`` / ``max_completion_tokens``  ``max_new_tokens``
``temperature``                             0: ``do_sample=false`` (greedy); else
                                            ``do_sample=true`` and ``temperature``
``top_p``, ``top_k``                        the same (``do_sample=true`` if no temperature)
``seed``, ``repetition_penalty``            the same (``top_k`` and ``repetition_penalty``
                                            are extensions, as in vLLM)
``stop`` (a string or a list)               ``stop`` (a list)
``frequency_penalty``, ``presence_penalty`` refused unless 0: not what repetition_penalty does
``n``                                       refused unless 1
==========================================  ===============================================
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = [
    "OPTIONS",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "CompletionBuilder",
    "Delta",
    "StopTrimmer",
    "Usage",
    "error_body",
    "finish_reason",
    "tgi_parameters",
]


class Delta(msgspec.Struct, omit_defaults=True):
    """What a chunk adds: the role in the first chunk, then text; empty in the last."""

    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    delta: Delta = msgspec.field(default_factory=Delta)
    logprobs: Any = None
    finish_reason: str | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    """One event of a streamed answer: ``choices[0].delta.content``, and ``finish_reason`` at the end."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int = 0
    model: str = ""
    choices: list[ChunkChoice] = msgspec.field(default_factory=list)
    usage: Usage | None = None


class ChatMessage(msgspec.Struct):
    role: str = "assistant"
    content: str | None = None


class Choice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: ChatMessage = msgspec.field(default_factory=ChatMessage)
    logprobs: Any = None
    finish_reason: str | None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    """A whole answer: ``choices[0].message.content``, ``choices[0].finish_reason`` and ``usage``."""

    id: str = ""
    object: str = "chat.completion"
    created: int = 0
    model: str = ""
    choices: list[Choice] = msgspec.field(default_factory=list)
    usage: Usage | None = None


class CompletionBuilder:
    """One answer's OpenAI objects, assembled from its TGI token texts as they arrive.

    The one place where chunks and completions are put together, for both the
    server's ``/v1`` and :class:`h2ochat.Client`. Streamed: ``start()``, then
    ``add(text)`` for each token's text (a chunk, or None while text that may
    begin a stop sequence is held back), then ``finish(...)`` for the last
    chunks. Whole: the same calls, then ``result()``. Every object shares the
    answer's id, creation time and model name.
    """

    def __init__(self, model: str, stops: Sequence[str] = (), *, include_usage: bool = False) -> None:
        self.model = model
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.include_usage = include_usage
        self._trimmer = StopTrimmer(list(stops))
        self._parts: list[str] = []
        self._finish: str | None = None
        self._usage = Usage()

    def start(self) -> ChatCompletionChunk:
        """The first chunk: the role, with empty content."""
        return self._chunk(Delta(role="assistant", content=""))

    def add(self, text: str) -> ChatCompletionChunk | None:
        """The chunk for one token's text, without any stop sequence (OpenAI leaves it out; TGI keeps it)."""
        return self._content(self._trimmer.feed(text))

    def finish(self, tgi_reason: str | None, prompt_tokens: int, completion_tokens: int) -> list[ChatCompletionChunk]:
        """The last chunks: any text held back, the finish reason, and the usage if it was asked for.

        ``tgi_reason`` None (a server that does not say why the answer ended) is taken as ``eos_token``.
        """
        last = [self._content(self._trimmer.flush())]
        self._finish = finish_reason(tgi_reason or "eos_token")
        self._usage = Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)
        last.append(self._chunk(Delta(), self._finish))
        if self.include_usage:
            last.append(self._usage_chunk(self._usage))
        return [chunk for chunk in last if chunk is not None]

    def result(self) -> ChatCompletion:
        """The whole answer, after ``finish``: the text of every chunk, its finish reason and usage."""
        return self._completion("".join(self._parts), self._finish, self._usage)

    def _content(self, text: str) -> ChatCompletionChunk | None:
        if not text:
            return None
        self._parts.append(text)
        return self._chunk(Delta(content=text))

    def _chunk(self, delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
        choices = [ChunkChoice(delta=delta, finish_reason=finish)]
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices)

    def _usage_chunk(self, usage: Usage) -> ChatCompletionChunk:
        """The extra last chunk of ``stream_options: {"include_usage": true}``: usage, no choices."""
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, usage=usage)

    def _completion(self, content: str, finish: str | None, usage: Usage) -> ChatCompletion:
        choices = [Choice(message=ChatMessage(content=content), finish_reason=finish)]
        return ChatCompletion(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)


def finish_reason(tgi_reason: str | None) -> str | None:
    """TGI's finish reason in OpenAI's words: length stays, eos_token and stop_sequence are "stop"."""
    if tgi_reason is None:
        return None
    return "length" if tgi_reason == "length" else "stop"


def error_body(
    message: str, error_type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, dict[str, str | None]]:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


OPTIONS = frozenset(
    {
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "repetition_penalty",
        "frequency_penalty",
        "presence_penalty",
        "n",
    }
)


def tgi_parameters(options: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI chat-completion options (None: not given) as TGI parameters; a ValueError names a bad one."""
    given = {name: value for name, value in options.items() if value is not None}
    unknown = sorted(given.keys() - OPTIONS)
    if unknown:
        raise ValueError(f"unsupported parameter {unknown[0]!r}; supported: {', '.join(sorted(OPTIONS))}")
    if given.get("n", 1) != 1:
        raise ValueError("n must be 1: one answer per request")
    for name in ("frequency_penalty", "presence_penalty"):
        if given.get(name, 0) != 0:
            raise ValueError(f"{name} is not supported; use repetition_penalty (1.0: none, 1.2: a common value)")
    parameters: dict[str, Any] = {}
    limit = given.get("max_completion_tokens", given.get("max_tokens"))
    if limit is not None:
        parameters["max_new_tokens"] = limit
    temperature = given.get("temperature")
    if temperature is not None:
        parameters["do_sample"] = temperature != 0
        if temperature != 0:
            parameters["temperature"] = temperature
    elif "top_p" in given or "top_k" in given:
        parameters["do_sample"] = True
    for name in ("top_p", "top_k", "seed", "repetition_penalty"):
        if name in given:
            parameters[name] = given[name]
    stop = given.get("stop")
    if stop is not None:
        parameters["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return parameters


class StopTrimmer:
    """Releases streamed text without its stop sequence, as OpenAI does (TGI keeps it).

    Text that could be the start of a stop sequence is held back until the
    next pieces show whether it is; ``flush()`` releases what is held when the
    answer ends for another reason.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [stop for stop in stops if stop]
        self._text = ""
        self._sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        self._text += piece
        found = [index for stop in self._stops if (index := self._text.find(stop, self._sent)) >= 0]
        if found:
            self.stopped = True
            return self._release(min(found))
        return self._release(len(self._text) - self._held())

    def flush(self) -> str:
        return "" if self.stopped else self._release(len(self._text))

    def _held(self) -> int:
        """The length of the longest end of the text that is the start of a stop sequence."""
        text = self._text
        for size in range(min(len(text) - self._sent, max(map(len, self._stops)) - 1), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0

    def _release(self, end: int) -> str:
        released, self._sent = self._text[self._sent : end], max(self._sent, end)
        return released
