"""A throwaway PostgreSQL cluster for tests and benchmarks: Debian's binaries, a temp dir, a free port.

``initdb`` refuses to run as root, so as root (CI) the cluster belongs to the
``postgres`` user and every server command runs through ``runuser``. The
cluster listens on 127.0.0.1 only, with a password (so that tests can check
it never leaks), and with ``fsync`` off: it is thrown away at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PASSWORD", "USER", "Cluster", "binaries"]

USER = "h2ochat"
PASSWORD = "s3cret-" + secrets.token_hex(6)


def binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``, or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    return max(found, key=lambda p: int(p.parent.name)) if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Cluster:
    """``Cluster.create()`` makes and starts one; ``destroy()`` stops it and removes its files."""

    def __init__(self, bin_dir: Path, directory: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.directory = directory
        self.port = port

    @classmethod
    def create(cls, max_connections: int = 300) -> Cluster:
        bin_dir = binaries()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL is not installed (apt-get install -y postgresql)")
        directory = Path(tempfile.mkdtemp(prefix="h2ochat-pg-"))
        cluster = cls(bin_dir, directory, _free_port())
        (directory / "pwfile").write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres", "postgres")
            shutil.chown(directory / "pwfile", "postgres", "postgres")
        cluster._run(
            "initdb", "-D", str(directory / "data"), "-U", USER, "--pwfile", str(directory / "pwfile"),
            "-A", "scram-sha-256", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        settings = {
            "port": str(cluster.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{directory}'",
            "max_connections": str(max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (directory / "data" / "postgresql.auto.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        cluster.start()
        return cluster

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run(command, check=True, capture_output=True, cwd=self.directory, env=env)

    def start(self) -> None:
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.directory / "data"), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = "t_" + secrets.token_hex(6)
        self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", "postgres", "-c",
                  f"CREATE DATABASE {name}")  # fmt: skip
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)
