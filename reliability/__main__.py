"""``python -m reliability [SUITE ...]``: the long versions, a table of figures, JSON in reliability/results/.

Suites: faults, fuzz, badinput, load, crash, slow, readers, attacks (default: all of them). Exits 1
when a figure misses its requirement.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from reliability.readers import readers_suite
from reliability.reattach import reattach_suite
from reliability.report import Report
from reliability.slowclients import slow_suite
from reliability.suites import (
    attacks_suite,
    badinput_suite,
    cookie_suite,
    crash_suite,
    faults_suite,
    fuzz_suite,
    load_suite,
)

__all__ = ["main"]

SUITES = ("faults", "fuzz", "badinput", "load", "crash", "slow", "readers", "attacks", "reattach")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__.splitlines()[0])
    parser.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"any of {', '.join(SUITES)} (default: all; badinput includes the ownership and cookie checks)",
    )
    parser.add_argument("--runs", type=int, default=1000, help="fault matrix runs (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of every suite (default 1)")
    parser.add_argument("--timeout", type=float, default=0.5, help="client time limits in faulty runs, s (0.5)")
    parser.add_argument("--fuzz-examples", type=int, default=2000, help="hypothesis examples per property (2000)")
    parser.add_argument("--requests", type=int, default=5000, help="random bad requests (5000)")
    parser.add_argument("--malformed", type=int, default=500, help="malformed HTTP requests (500)")
    parser.add_argument("--guesses", type=int, default=2000, help="conversation ids guessed (2000)")
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams under load (200)")
    parser.add_argument("--seconds", type=float, default=60, help="load duration, s (60)")
    parser.add_argument("--kill-rounds", type=int, default=20, help="kill -9 and restart rounds (20)")
    parser.add_argument("--sigterms", type=int, default=5, help="SIGTERM shutdowns (5)")
    parser.add_argument("--sigterm-streams", type=int, default=20, help="open streams per SIGTERM (20)")
    parser.add_argument("--failures", type=int, default=50, help="answers from a failing backend (50)")
    parser.add_argument("--floods", type=int, default=3000, help="cookie-less settings and conversations (3000)")
    parser.add_argument("--slow", type=int, default=1000, help="slow connections held open (1000)")
    parser.add_argument("--slow-seconds", type=float, default=40, help="normal requests beside them, s (40)")
    parser.add_argument("--open-files", type=int, default=256, help="the slow suite's server ulimit -n (256; 0: none)")
    parser.add_argument("--readers", type=int, default=1000, help="sockets that stop reading (1000)")
    parser.add_argument("--reader-streams", type=int, default=32, help="streams whose readers stop (32)")
    parser.add_argument("--readers-seconds", type=float, default=40, help="normal requests beside them, s (40)")
    parser.add_argument("--reattach-streams", type=int, default=200, help="answers cut and reattached (200)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results", help="where the JSON goes")
    args = parser.parse_args(argv)
    unknown = [suite for suite in args.suites if suite not in SUITES]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)}: choose from {', '.join(SUITES)}")
    return args


async def run(args: argparse.Namespace, console: Console) -> Report:
    suites = args.suites or list(SUITES)
    report = Report({key: str(value) for key, value in vars(args).items()})
    with tempfile.TemporaryDirectory(prefix="h2ochat-reliability-") as work:
        workdir = Path(work)
        for suite in SUITES:
            if suite not in suites:
                continue
            console.print(f"[bold]{suite}[/] ...")
            if suite == "faults":
                await faults_suite(report, args.runs, args.seed, args.timeout, console)
            elif suite == "fuzz":
                fuzz_suite(report, args.fuzz_examples)
            elif suite == "badinput":
                await badinput_suite(report, args.requests, args.malformed, args.guesses, args.seed)
                await cookie_suite(report, workdir)
            elif suite == "attacks":
                await attacks_suite(report, args.floods, workdir)
            elif suite == "slow":
                await slow_suite(report, args.slow, args.slow_seconds, args.open_files or None, workdir)
            elif suite == "readers":
                await readers_suite(report, args.readers, args.reader_streams, args.readers_seconds, workdir)
            elif suite == "reattach":
                await reattach_suite(report, args.reattach_streams, args.seed)
            elif suite == "load":
                await load_suite(report, args.streams, args.seconds, workdir)
            else:
                await crash_suite(report, args.kill_rounds, args.sigterms, args.sigterm_streams, args.failures, workdir)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # The server logs every refusal it is made to give; the figures are what matter here.
    logging.basicConfig(level=logging.CRITICAL)
    console = Console(width=None if sys.stdout.isatty() else 160)  # a wide table in files and pipes too
    report = asyncio.run(run(args, console))
    report.print(console)
    path = report.save(args.out)
    console.print(f"JSON: {path}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
