"""An upstream OpenAI-compatible server: ``POST <url>/v1/chat/completions`` with ``stream: true``.

vLLM, llama.cpp's server, llama-cpp-python's server, TGI's Messages API and
OpenAI itself speak it. The request's messages go as they are (the upstream
applies the model's chat template); the answer's ``data: {chunk}`` events,
ending with ``data: [DONE]``, are read with the project's event-stream decoder.

What the answer cannot carry: token ids (every token is id 0), log
probabilities, and the difference between an end-of-sequence token and a
stop sequence (both arrive as ``finish_reason: "stop"``, reported as
``eos_token``). One chunk counts as one token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import msgspec

from h2ochat.protocol.errors import ProtocolError
from h2ochat.protocol.nesting import MAX_JSON_DEPTH, too_deep
from h2ochat.protocol.openai import ChunkChoice
from h2ochat.protocol.parameters import Parameters
from h2ochat.protocol.sse import EventStreamDecoder
from h2ochat.server.config import ConfigError, ModelConfig, OpenAIEndpoint
from h2ochat.server.inference.backends import BackendError, GeneratedToken, GenerationRequest
from h2ochat.server.inference.backends.upstream import UpstreamBackend

__all__ = ["OpenAIBackend", "openai_parameters"]

_FINISH = {"stop": "eos_token", "length": "length"}  # anything else (tool_calls, content_filter): eos_token


def openai_parameters(parameters: Parameters, extra: bool = True) -> dict[str, Any]:
    """TGI parameters as OpenAI chat-completion options.

    - ``max_new_tokens`` → ``max_tokens``
    - ``do_sample=false`` → ``temperature: 0`` (greedy; temperature, top_p and top_k are not sent);
      ``do_sample=true`` → ``temperature`` and ``top_p`` as given (the engine's defaults otherwise)
    - ``seed`` → ``seed``; ``stop`` → ``stop``
    - ``top_k`` → ``top_k``, and ``repetition_penalty`` → ``repetition_penalty`` (vLLM's name) plus
      ``repeat_penalty`` (llama.cpp's and llama-cpp-python's name): not OpenAI parameters, so they are
      sent only when ``extra`` (the endpoint's ``extra_parameters``). The repetition penalty is never
      passed as ``frequency_penalty``: that one subtracts a count-scaled value, a different formula.
    - ``truncate`` and ``typical_p`` have no OpenAI counterpart and are not sent.
    """
    options: dict[str, Any] = {}
    if parameters.max_new_tokens is not None:
        options["max_tokens"] = parameters.max_new_tokens
    if not parameters.do_sample:
        options["temperature"] = 0.0
    else:
        if parameters.temperature is not None:
            options["temperature"] = parameters.temperature
        if parameters.top_p is not None:
            options["top_p"] = parameters.top_p
        if extra and parameters.top_k is not None:
            options["top_k"] = parameters.top_k
    if parameters.seed is not None:
        options["seed"] = parameters.seed
    if parameters.stop:
        options["stop"] = list(parameters.stop)
    if extra and parameters.repetition_penalty is not None:
        options["repetition_penalty"] = options["repeat_penalty"] = parameters.repetition_penalty
    return options


class OpenAIBackend(UpstreamBackend):
    path = "/v1/chat/completions"

    def __init__(self, endpoint: OpenAIEndpoint, model: ModelConfig) -> None:
        super().__init__(endpoint)
        self.openai = endpoint
        if self.url.endswith("/v1"):  # both spellings of the base URL are common
            self.url = self.url[: -len("/v1")]
        self.model = endpoint.model or model.name

    def headers(self) -> dict[str, str]:
        name = self.openai.api_key_env
        if name is None:
            return {}
        key = os.environ.get(name)
        if not key:
            raise ConfigError(
                f"the openai endpoint {self.openai.url} takes its API key from the environment variable {name}, "
                "which is not set"
            )
        return {"Authorization": f"Bearer {key}"}

    def body(self, request: GenerationRequest) -> bytes:
        options = openai_parameters(request.parameters, self.openai.extra_parameters)
        messages = request.messages
        if request.prefix:  # an answer to continue: servers that can (llama-server, vLLM) go on from it
            messages = [*messages, {"role": "assistant", "content": request.prefix}]
        payload = {"model": self.model, "messages": messages, "stream": True, **options}
        return msgspec.json.encode(payload)

    def decoder(self) -> _Decoder:
        return _Decoder(self.url + self.path)


class _Chunk(msgspec.Struct):
    choices: list[ChunkChoice] = msgspec.field(default_factory=list)
    error: Any = None  # some servers report a failure inside the stream


_chunk_decoder = msgspec.json.Decoder(_Chunk)


class _Decoder:
    def __init__(self, url: str) -> None:
        self._url = url
        self._events = EventStreamDecoder()

    def feed(self, chunk: bytes) -> Iterator[GeneratedToken]:
        try:
            events = self._events.decode(chunk)
        except ProtocolError as exc:
            raise BackendError(f"{self._url}: {exc}") from None
        for event in events:
            if event.data.strip() == "[DONE]":
                # The stream ended without a finish reason: the engine's own end of answer.
                yield GeneratedToken(0, "", special=True, finish_reason="eos_token")
                return
            token = self._token(event.data)
            if token is not None:
                yield token

    def _token(self, data: str) -> GeneratedToken | None:
        if too_deep(data):
            raise BackendError(f"{self._url} sent an event nested more than {MAX_JSON_DEPTH} levels deep")
        try:
            chunk = _chunk_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise BackendError(f"{self._url} sent an event that is not a chat-completion chunk ({exc})") from None
        if chunk.error is not None:
            message = chunk.error.get("message") if isinstance(chunk.error, dict) else chunk.error
            raise BackendError(f"{self._url} reported an error: {message}")
        if not chunk.choices:
            return None  # a usage-only chunk
        choice = chunk.choices[0]
        text = choice.delta.content or ""
        finish = None if choice.finish_reason is None else _FINISH.get(choice.finish_reason, "eos_token")
        if not text and finish is None:
            return None  # the role announcement, or an empty delta
        # The finish reason may come in a chunk without text: a special empty token then carries it.
        return GeneratedToken(0, text, special=not text, finish_reason=finish)
