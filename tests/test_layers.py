"""The package's layers: the pure protocol loads no I/O library, and the root's re-exports are lazy."""

from __future__ import annotations

import subprocess
import sys

import pytest

import h2ochat


def _run(code: str) -> subprocess.CompletedProcess[str]:
    # A fresh interpreter: this one has long since imported aiohttp for other tests.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "module", ["h2ochat.protocol", "h2ochat.protocol.sse", "h2ochat.protocol.openai", "h2ochat.protocol.chatui_bodies"]
)
def test_the_protocol_loads_no_io_library(module: str) -> None:
    heavy = ("aiohttp", "h2ochat.providers", "h2ochat.client")
    loaded = _run(f"import {module}, sys; print(sorted(m for m in {heavy!r} if m in sys.modules))")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"


def test_the_root_loads_the_client_on_first_use() -> None:
    loaded = _run(
        "import sys, h2ochat; before = 'aiohttp' in sys.modules; from h2ochat import H2o; "
        "print(before, 'aiohttp' in sys.modules, H2o.__module__)"
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["False", "True", "h2ochat.providers.h2o"]


def test_every_public_name_resolves() -> None:
    for name in h2ochat.__all__:
        assert getattr(h2ochat, name) is not None, name
    assert set(h2ochat.__all__) <= set(dir(h2ochat))
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = h2ochat.nothing_here
