"""Differences between the Python versions h2ochat supports (3.10 and later)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout_at
else:  # pragma: no cover - Python 3.10
    from async_timeout import timeout_at

__all__ = ["timeout_at"]
