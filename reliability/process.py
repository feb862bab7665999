"""The server in a child process: a TOML file, start, kill -9, SIGTERM, restart, and its memory."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from h2ochat.server import ModelConfig, ServerConfig
from h2ochat.server.config import FixedEndpoint

__all__ = ["MODEL", "ServerProcess", "db_rows", "server_config", "write_config"]

MODEL = "test/fixed"
_ROOT = Path(__file__).resolve().parent.parent


def server_config(db: str = ":memory:", **endpoint: Any) -> ServerConfig:
    """The in-process twin of :func:`write_config`: one model on the ``fixed`` backend."""
    config = ServerConfig(port=0, db=db, models=[ModelConfig(name=MODEL, endpoints=[FixedEndpoint(**endpoint)])])
    return config


def write_config(path: Path, db: Path | str, server: dict[str, Any] | None = None, **endpoint: Any) -> Path:
    """A configuration with one model on the deterministic ``fixed`` backend (``server``: more [server] keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["[server]", 'host = "127.0.0.1"', "port = 0", f"db = {json.dumps(str(db))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in (server or {}).items()]
    lines += ["", "[[models]]"]
    lines += [f"name = {json.dumps(MODEL)}", "[[models.endpoints]]", 'type = "fixed"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in endpoint.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class ServerProcess:
    """``python -m reliability.launcher`` for one configuration; restarts keep the first port."""

    config: Path
    log: Path
    port: int | None = None
    url: str = ""
    process: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)  # seconds from spawn to listening, per start
    open_files: int | None = None  # the child's RLIMIT_NOFILE, soft and hard (as `ulimit -n`)
    log_level: str = "WARNING"
    send_buffer: int | None = None  # the server's send buffer per connection, bytes (launcher.py)
    _log_file: IO[bytes] | None = None

    def start(self, timeout: float = 60.0) -> str:
        """Spawn the server and wait until it prints its URL (it listens then)."""
        command = [sys.executable, "-m", "reliability.launcher", str(self.config)]
        if self.port is not None:
            command.append(str(self.port))
        if self.open_files is not None:  # the shell's own ulimit, then the server in its place
            command = ["/bin/sh", "-c", f'ulimit -n {self.open_files} && exec "$@"', "sh", *command]
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - kept open while the child runs
        spawned = time.monotonic()
        self.process = subprocess.Popen(
            command,
            cwd=_ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            env=self._environment(),
        )
        self.url = self._read_url(timeout)
        self.starts.append(time.monotonic() - spawned)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def _environment(self) -> dict[str, str]:
        # This checkout's sources first: an editable install may point at another checkout.
        path = os.pathsep.join([str(_ROOT / "src"), str(_ROOT)])
        env = {**os.environ, "PYTHONPATH": path, "H2OCHAT_LOG_LEVEL": self.log_level}
        if self.send_buffer is not None:
            env["H2OCHAT_SEND_BUFFER"] = str(self.send_buffer)
        return env

    def _read_url(self, timeout: float) -> str:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log}")
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line = self.process.stdout.readline().decode().strip()
                if line.startswith("http"):
                    return line
        self.kill()
        raise TimeoutError(f"the server did not start within {timeout} s; see {self.log}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss(self) -> int:
        """Resident memory of the server process, in bytes."""
        import psutil

        return int(psutil.Process(self.pid).memory_info().rss)

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        if self.process is None:
            return None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 30 s."""
        if self.process is not None and self.process.poll() is None:
            self.terminate()
            if self.wait(30) is None:
                self.kill()
        self._close_pipes()


def db_rows(db: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the server's database directly (read-only), e.g. between a crash and the restart."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return connection.execute(query, args).fetchall()
    finally:
        connection.close()
