"""The installed version of h2ochat, in a module of its own.

Anything inside the package that needs the version (the User-Agent, ``--version``)
imports it from here, so that no module reaches back up to the package root,
whose re-exports would load every layer.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__", "user_agent"]

try:
    __version__ = version("h2ochat")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def user_agent() -> str:
    """The User-Agent of every request h2ochat sends, as a client or to an upstream engine."""
    return f"h2ochat/{__version__}"
