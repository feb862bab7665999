"""An h2oGPT-compatible chat server, one room per part:

- ``chatui/``: the chat-ui protocol handlers (conversations, messages, JSON reads);
- ``apis/``: the OpenAI ``/v1`` and TGI ``/generate`` APIs, which store nothing;
- ``web/``: the web chat page and its static files;
- ``streaming``: the one answer loop that the chat protocol and the APIs speak through;
- ``inference/``: the models at run time, their backends, Hub pulls and the GGUF reader;
- ``edge/``: what every request passes first (connection guard, security, HTTP helpers);
- ``storage/``: the ``Store`` interface, on SQLite or PostgreSQL;
- ``config``: the settings; ``app``: the application that wires them together and runs it.
"""

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
