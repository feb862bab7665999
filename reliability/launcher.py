"""``python -m reliability.launcher CONFIG.toml [PORT]``: the server in a process of its own.

It reads the TOML file (README.md's format), prints the URL it serves on one
line of stdout once it listens, and runs until SIGINT or SIGTERM, exactly as
``h2ochat serve`` does (the same :func:`h2ochat.server.serve`). With
``H2OCHAT_SEND_BUFFER`` set, each connection's send buffer is that many bytes
(the guard's test-scoped hook): loopback would otherwise absorb about a
megabyte of answer that a client never reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from h2ochat.server import load_config, serve
from h2ochat.server.edge import guard

__all__ = ["main"]


def main(argv: list[str]) -> None:
    # A restart comes back on the port the clients know.
    config = load_config(argv[0], port=int(argv[1]) if len(argv) > 1 else None)
    level = os.environ.get("H2OCHAT_LOG_LEVEL", "WARNING")
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    if "H2OCHAT_SEND_BUFFER" in os.environ:
        guard.SEND_BUFFER = int(os.environ["H2OCHAT_SEND_BUFFER"])
    asyncio.run(serve(config, ready=lambda url: print(url, flush=True)))


if __name__ == "__main__":
    main(sys.argv[1:])
