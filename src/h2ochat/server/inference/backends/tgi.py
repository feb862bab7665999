"""An upstream text-generation-inference server, or another h2ochat: ``POST <url>/generate_stream``.

TGI takes one prompt string, so the model must use chat-ui tokens: h2ochat
builds the prompt (``build_prompt``) and TGI continues it. The events are read
with the project's own TGI decoder; an error event becomes a BackendError of
the same ``error_type``.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec

from h2ochat.protocol.errors import GenerationError, ProtocolError
from h2ochat.protocol.tgi import TGIStreamDecoder
from h2ochat.server.config import ConfigError, ModelConfig, TgiEndpoint
from h2ochat.server.inference.backends import BackendError, GeneratedToken, GenerationRequest
from h2ochat.server.inference.backends.upstream import UpstreamBackend

__all__ = ["TgiBackend"]


class TgiBackend(UpstreamBackend):
    path = "/generate_stream"

    def __init__(self, endpoint: TgiEndpoint, model: ModelConfig) -> None:
        if not model.uses_chatui_tokens:
            raise ConfigError(
                f"the model {model.name!r} has a tgi endpoint ({endpoint.url}), which takes one prompt string: "
                "set user_message_token, assistant_message_token and message_end_token so that h2ochat can build it"
            )
        super().__init__(endpoint)

    def body(self, request: GenerationRequest) -> bytes:
        if request.prompt is None:
            raise BackendError("a tgi endpoint needs a prompt built with chat-ui tokens")
        # details: the last event must say why the answer ended; the text is ours to assemble.
        parameters = msgspec.structs.replace(request.parameters, details=True, return_full_text=False)
        return msgspec.json.encode({"inputs": request.prompt, "parameters": parameters})

    def decoder(self) -> _Decoder:
        return _Decoder(self.url + self.path)


class _Decoder:
    def __init__(self, url: str) -> None:
        self._url = url
        self._events = TGIStreamDecoder()

    def feed(self, chunk: bytes) -> Iterator[GeneratedToken]:
        try:
            for event in self._events.decode(chunk):
                token = event.token
                if token is None:
                    continue
                finish = None
                if event.details is not None:
                    finish = event.details.finish_reason
                elif event.generated_text is not None:  # a server that ignored details=true
                    finish = "eos_token" if token.special else "length"
                yield GeneratedToken(token.id, token.text, token.logprob, token.special, finish)
        except GenerationError as exc:
            raise BackendError(f"{self._url}: {exc}", exc.error_type) from None
        except ProtocolError as exc:
            raise BackendError(f"{self._url}: {exc}") from None
