"""A deterministic backend for tests and benchmarks: no model, exact and fast.

It answers with a fixed text (or echoes the last user message), one word per
token, with optional delays and an injected failure. It is a test tool, never
a default: a configuration must ask for it with ``type = "fixed"``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from h2ochat.server.config import FixedEndpoint
from h2ochat.server.inference.backends import BackendError, GeneratedToken, GenerationRequest

__all__ = ["FixedBackend", "split_words"]

_WORDS = re.compile(r"\s*\S+|\s+")
EOS = GeneratedToken(id=0, text="</s>", special=True, finish_reason="eos_token")


def split_words(text: str) -> list[str]:
    """Word-sized pieces that join back to exactly ``text``."""
    return _WORDS.findall(text)


class FixedBackend:
    def __init__(self, endpoint: FixedEndpoint) -> None:
        self.endpoint = endpoint
        self.max_concurrency = endpoint.max_concurrency

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GeneratedToken]:
        endpoint = self.endpoint
        text = endpoint.text
        if endpoint.echo:
            text = request.messages[-1]["content"]
        elif endpoint.echo_prompt:  # what reached the model: the system prompt and the branch, in order
            text = "\n".join(f"{m['role']}: {m['content']}" for m in request.messages)
        pieces = split_words(text)
        budget = request.parameters.max_new_tokens or len(pieces) + 1
        # "Tokens" are words here too, so that usage counts can be checked.
        prompt = request.prompt if request.prompt is not None else "\n".join(m["content"] for m in request.messages)
        prompt_tokens = len(split_words(prompt))
        if endpoint.first_token_delay:
            await asyncio.sleep(endpoint.first_token_delay)
        for index, piece in enumerate(pieces[:budget], start=1):
            if endpoint.fail_after is not None and index > endpoint.fail_after:
                raise BackendError(f"the fixed backend failed on purpose after {endpoint.fail_after} tokens")
            if index == budget:
                yield GeneratedToken(index, piece, finish_reason="length", prompt_tokens=prompt_tokens)
                return
            yield GeneratedToken(index, piece, prompt_tokens=prompt_tokens)
            if endpoint.delay:
                await asyncio.sleep(endpoint.delay)
        yield EOS._replace(prompt_tokens=prompt_tokens)
