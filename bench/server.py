"""The project's own server in a process of its own, for the concurrency and model benchmarks.

Run as ``python -m bench.server --fixed TEXT`` (the deterministic fixed
backend, one word per token) or ``python -m bench.server --llama`` (the
default configuration: embedded SmolLM2; ``--parallel N`` sets how many
answers it batches, ``--fixed-shares`` gives each a fixed share of the
context).  It prints ``{"url": ..., "model": ...}`` once ready and stops on
SIGTERM.  The store is in memory and the welcome gate on, as by default; with ``--fixed``
one session may run any number of answers at once (``max_running_answers = 0``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from bench.common import announce, raise_fd_limit
from h2ochat.server import ModelConfig, ServerConfig, load_config, start_server
from h2ochat.server.config import FixedEndpoint, LlamaEndpoint

__all__ = ["FIXED_MODEL", "main"]

FIXED_MODEL = "bench/fixed"


def config(
    fixed: str | None, delay: float = 0.0, parallel: int | None = None, fixed_shares: bool = False
) -> ServerConfig:
    if fixed is None:
        settings = load_config(host="127.0.0.1", port=0, db=":memory:", parallel=parallel)
        if fixed_shares:  # the scheduler before the shared pool: llama.cpp's split streams
            for model in settings.models:
                for endpoint in model.endpoints:
                    if isinstance(endpoint, LlamaEndpoint):
                        endpoint.kv_unified = False
        return settings
    models = [ModelConfig(name=FIXED_MODEL, endpoints=[FixedEndpoint(text=fixed, delay=delay)])]
    # The concurrency benchmark sends its thousand answers through one session on purpose (one
    # reused H2oSession), so the per-session guard against a runaway client (three at once by
    # default) is off here; what it measures is the server's own cost per conversation.
    return ServerConfig(host="127.0.0.1", port=0, db=":memory:", models=models, max_running_answers=0)


async def _serve(fixed: str | None, delay: float, parallel: int | None, fixed_shares: bool) -> None:
    settings = config(fixed, delay, parallel, fixed_shares)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with start_server(settings) as server:
        announce(url=server.url, model=settings.models[0].name)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    backend = parser.add_mutually_exclusive_group(required=True)
    backend.add_argument("--fixed", metavar="TEXT", help="serve the fixed backend answering TEXT")
    backend.add_argument("--llama", action="store_true", help="serve the default model (embedded SmolLM2)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between the fixed backend's tokens")
    parser.add_argument("--parallel", type=int, help="answers the llama model computes at once")
    parser.add_argument("--fixed-shares", action="store_true", help="kv_unified = false: a fixed share per answer")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit(65536)  # a thousand simultaneous connections need more than the usual 1024 descriptors
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.fixed, args.delay, args.parallel, args.fixed_shares))


if __name__ == "__main__":
    main()
