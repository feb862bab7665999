"""``python -m bench``: run the benchmarks of issue 5 side by side and report them.

    python -m bench                       # everything, full sizes (a few minutes)
    python -m bench --quick               # smaller sizes, fewer repeats (under a minute)
    python -m bench --only decode,latency # some of them

Results are printed as tables and written to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.common import Section
from bench.report import machine, print_machine, print_section, print_summary, save

__all__ = ["BENCHMARKS", "main"]

# Benchmark name -> (full sizes, quick sizes); each module's run() takes these keywords.
BENCHMARKS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "decode": ({"events": 100_000, "repeats": 7}, {"events": 20_000, "repeats": 3}),
    "throughput": (
        {"tokens": 20_000, "repeats": 9, "long_answer": 160_000},
        {"tokens": 5_000, "repeats": 3, "long_answer": 0},
    ),
    "latency": ({"delay": 0.02, "repeats": 10}, {"delay": 0.02, "repeats": 3}),
    "concurrency": ({"conversations": 1000, "repeats": 3}, {"conversations": 1000, "repeats": 1}),
    "model": ({"max_new_tokens": 128, "repeats": 7}, {"max_new_tokens": 32, "repeats": 2}),
    "replicas": (
        {"conversations": 400, "streams": 1000, "repeats": 3},
        {"conversations": 100, "streams": 1000, "repeats": 1},
    ),
    "page": (
        {"tokens": 2000, "delay": 0.005, "loads": 10, "repeats": 3},
        {"tokens": 500, "delay": 0.005, "loads": 4, "repeats": 1},
    ),
    "runs": ({"answers": 20, "tokens": 1000, "repeats": 3}, {"answers": 5, "tokens": 500, "repeats": 1}),
    "batching": (
        {"concurrency": (1, 2, 4, 8, 16), "max_new_tokens": 128, "repeats": 2},
        {"concurrency": (1, 4), "max_new_tokens": 32, "repeats": 1},
    ),
}
RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (about a minute)")
    parser.add_argument(
        "--only", metavar="NAMES", help=f"comma-separated benchmarks to run, of: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--repeats", type=int, metavar="N", help="repeats of every benchmark (overrides the sizes)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON (default: bench/results)")
    parser.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    args = parser.parse_args(argv)
    names = [name.strip() for name in (args.only or ",".join(BENCHMARKS)).split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console()
    if not console.is_terminal:  # piped to a file: wide enough that the tables do not wrap
        console = Console(width=150)
    info = machine()
    print_machine(console, info)
    console.print(f"[bold]Command[/bold]: python -m bench {' '.join(sys.argv[1:])}\n")
    started = time.perf_counter()
    sections: list[Section] = []
    for name in args.names:
        sizes = dict(BENCHMARKS[name][1 if args.quick else 0])
        if args.repeats is not None:
            sizes["repeats"] = args.repeats
        module = importlib.import_module(f"bench.{name}")
        # A plain line, not a live spinner: its refresh thread would run during the measurements.
        console.print(f"[dim]running {name} {sizes} ...[/dim]")
        begun = time.perf_counter()
        section: Section = module.run(**sizes)
        section.seconds = time.perf_counter() - begun
        print_section(console, section)
        sections.append(section)
    elapsed = time.perf_counter() - started
    print_summary(console, sections)
    info["load_average_after"] = machine()["load_average"]
    console.print(
        f"[dim]{elapsed:.0f} s in all; load average before {info['load_average']}, after "
        f"{info['load_average_after']}[/dim]"
    )
    if not args.no_save:
        path = save(args.out, info, sections, quick=args.quick, seconds=elapsed)
        console.print(
            f"[dim]written: {path} (and {path.parent / ('latest-quick.json' if args.quick else 'latest.json')})[/dim]"
        )
        suffix = "-quick" if args.quick else ""
        for section in sections:  # a benchmark with a plot writes it beside the JSON
            draw = getattr(importlib.import_module(f"bench.{section.key}"), "plot", None)
            if draw is not None:
                console.print(f"[dim]plot: {draw(section, path.parent / f'{section.key}{suffix}.png')}[/dim]")
    return 0 if all(target.met for section in sections for target in section.targets) else 1


if __name__ == "__main__":
    sys.exit(main())
