"""Several ``h2ochat serve`` processes on one database, as replicas behind a load balancer would run.

Each replica is a real ``python -m h2ochat serve --config FILE --port P``
process with the fixed backend (exact answers, one word per token, a delay
per token when asked), so that tests and benchmarks can send each request
to another replica, kill one with SIGKILL, and read what the others see.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reliability.process import MODEL as FIXED_MODEL
from reliability.process import write_config as reliability_config

__all__ = ["FIXED_MODEL", "Replica", "replicas", "write_config"]

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(path: Path, db: str, *, text: str, delay: float = 0.0, **server: Any) -> Path:
    """A TOML configuration: ``[server]`` with ``db`` and ``server``, one fixed-backend model."""
    return reliability_config(path, db, server, text=text, delay=delay)


@dataclass
class Replica:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last save, as a crashed machine."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def _start(config: Path, log: Path) -> Replica:
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "h2ochat", "serve", "--config", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    replica = Replica(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a replica exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{replica.url}/api/models", timeout=2) as answer,
        ):
            if answer.status == 200:
                return replica
        time.sleep(0.1)
    replica.kill()
    raise RuntimeError(f"a replica did not answer within 60 s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def replicas(count: int, config: Path) -> Iterator[list[Replica]]:
    """``count`` replicas of one configuration, started together; stopped (SIGTERM) at the end."""
    started: list[Replica] = []
    try:
        for index in range(count):
            started.append(_start(config, config.with_name(f"replica-{index}.log")))
        yield started
    finally:
        for replica in started:
            replica.stop()
