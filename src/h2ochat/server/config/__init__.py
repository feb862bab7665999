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
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

from h2ochat.server.config.checks import check_base_path, check_identity_headers, check_oidc, check_proxies
from h2ochat.server.config.models import (
    DEFAULT_MODEL_ID,
    ConfigError,
    Endpoint,
    FixedEndpoint,
    LlamaEndpoint,
    ModelConfig,
    OpenAIEndpoint,
    PromptExample,
    TgiEndpoint,
    UpstreamEndpoint,
    _Table,
    check_models,
    default_models,
)

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
    # Sign-in through an OpenID Connect provider (README "Sign-in with OpenID Connect"): its issuer URL and
    # this server's client id there; the client's secret comes from H2OCHAT_OIDC_CLIENT_SECRET, never a file.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_scopes: str = "openid email profile"
    allowed_emails: list[str] = msgspec.field(default_factory=list)  # empty, with allowed_domains empty: anyone
    allowed_domains: list[str] = msgspec.field(default_factory=list)
    # With sign-in on: messages an anonymous session may send, then 401 "sign in" (0: sign-in to chat at all).
    messages_before_login: Annotated[int, msgspec.Meta(ge=0)] | None = None
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
        check_oidc(self.oidc_issuer, self.oidc_client_id, self.messages_before_login)
        for key in ("allowed_emails", "allowed_domains"):
            msgspec.structs.force_setattr(self, key, [entry.strip().lower() for entry in getattr(self, key)])
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

    @property
    def sign_in(self) -> bool:
        """Whether people sign in through an OpenID Connect provider (``/login``)."""
        return self.oidc_issuer is not None

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
