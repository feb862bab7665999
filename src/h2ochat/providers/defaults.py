"""Which server and which model a call uses when the caller does not say: the one place that decides.

The order, for the server root and for the model alike:

1. an explicit argument (``url=``, ``base_url=``, ``--url``; a non-empty ``model``);
2. a value a provider class sets (``class MyH2o(H2o): url = "http://my-server:8080"``, or
   ``H2o.url = ...``): any value other than the historical default counts as set;
3. the environment: ``H2OCHAT_URL``, ``H2OCHAT_MODEL``;
4. the historical h2oGPT defaults (``https://gpt-gm.h2o.ai`` and its Falcon 40B model).

This is the only module that reads ``H2OCHAT_URL`` and ``H2OCHAT_MODEL``.
"""

from __future__ import annotations

import os

from h2ochat.protocol.tgi import DEFAULT_MODEL, DEFAULT_URL

__all__ = ["configured_model", "configured_url", "server_model", "server_url"]


def _class_value(value: str | None, historical: str) -> str | None:
    # The provider class carries the historical default itself (g4f reads ``H2o.url``), so
    # only a different value is a choice somebody made.
    return value if value and value != historical else None


def configured_url(url: str | None = None, class_url: str | None = None) -> str | None:
    """The server root chosen by an argument, a provider class or ``H2OCHAT_URL``; None when nobody chose.

    The command line uses None to start the embedded server instead.
    """
    return url or _class_value(class_url, DEFAULT_URL) or os.environ.get("H2OCHAT_URL") or None


def server_url(url: str | None = None, class_url: str | None = None) -> str:
    """The server root a call goes to, in the order of this module's docstring."""
    return configured_url(url, class_url) or DEFAULT_URL


def configured_model(model: str | None = None, class_model: str | None = None) -> str | None:
    """The model chosen by an argument, a provider class or ``H2OCHAT_MODEL``; None when nobody chose.

    The command line uses None to take the server's first model instead.
    """
    return model or _class_value(class_model, DEFAULT_MODEL) or os.environ.get("H2OCHAT_MODEL") or None


def server_model(model: str | None = None, class_model: str | None = None) -> str:
    """The model a call asks for, in the order of this module's docstring."""
    return configured_model(model, class_model) or DEFAULT_MODEL
