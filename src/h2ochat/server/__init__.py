"""An h2oGPT-compatible chat server: sessions, SQLite storage, streaming, model backends."""

from __future__ import annotations

from h2ochat.server.app import RunningServer, create_app, serve, start_server
from h2ochat.server.config import ConfigError, ModelConfig, ServerConfig, default_models, load_config

__all__ = [
    "ConfigError",
    "ModelConfig",
    "RunningServer",
    "ServerConfig",
    "create_app",
    "default_models",
    "load_config",
    "serve",
    "start_server",
]
