"""Printing and saving results: the machine, one rich table per benchmark, the JSON file."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import Section

__all__ = ["LIBRARIES", "machine", "print_machine", "print_section", "print_summary", "save"]

LIBRARIES = (
    "h2ochat",
    "aiohttp",
    "msgspec",
    "text-generation",
    "pydantic",
    "requests",
    "openai",
    "httpx",
    "httpx-sse",
    "llama_cpp_python",
    "rich",
)


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, cores, load, Python and library versions."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "hostname": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average": _load(),
        "memory_gib": _memory_gib(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "libraries": versions,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def slug(info: dict[str, Any]) -> str:
    """A file-name-safe machine name: cores and CPU model, e.g. ``2cpu-intel-xeon-processor``."""
    model = re.sub(r"\((r|tm)\)", "", info["cpu"].lower())
    return re.sub(r"[^a-z0-9]+", "-", f"{info['cores']}cpu {model}").strip("-")[:60]


def print_machine(console: Console, info: dict[str, Any]) -> None:
    libraries = ", ".join(f"{name} {version}" for name, version in info["libraries"].items() if version)
    console.print(
        f"[bold]Machine[/bold]: {info['cpu']}, {info['usable_cores']} usable cores of {info['cores']}, "
        f"{info['memory_gib']} GiB, load average {info['load_average']}\n"
        f"[bold]Python[/bold]: {info['python']} on {info['platform']}\n"
        f"[bold]Libraries[/bold]: {libraries}"
    )


def _number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def print_section(console: Console, section: Section) -> None:
    table = Table(title=section.title, title_justify="left", title_style="bold", show_lines=False)
    table.add_column("case")
    table.add_column("implementation / figure")
    table.add_column("median", justify="right")
    table.add_column("min - max", justify="right")
    table.add_column("IQR", justify="right")
    table.add_column("unit")
    if section.ratio_label:
        table.add_column(section.ratio_label, justify="right")
    previous = None
    for row in section.rows:
        stats = row.stats
        q1, q3 = stats.quartiles
        cells = [
            row.case if row.case != previous else "",
            row.name,
            _number(stats.median),
            f"{_number(stats.low)} - {_number(stats.high)}",
            f"{_number(q1)} - {_number(q3)}",
            row.unit,
        ]
        if section.ratio_label:
            cells.append("" if row.ratio is None else f"{row.ratio:.2f}x")
        table.add_row(*cells, end_section=False)
        previous = row.case
    console.print(table)
    for target in section.targets:
        mark = "[green]MET[/green]" if target.met else "[red]MISSED[/red]"
        console.print(f"  {mark} {target.goal}: {target.detail}")
    for note in section.notes:
        console.print(f"  [dim]· {note}[/dim]")
    console.print(f"  [dim]({section.seconds:.0f} s, {len(section.rows[0].stats.samples)} repeats)[/dim]\n")


def print_summary(console: Console, sections: list[Section]) -> None:
    table = Table(title="Targets of issue 5", title_justify="left", title_style="bold")
    table.add_column("benchmark")
    table.add_column("target")
    table.add_column("result")
    table.add_column("this run")
    for section in sections:
        for target in section.targets:
            table.add_row(
                section.key, target.goal, "[green]met[/green]" if target.met else "[red]missed[/red]", target.detail
            )
    console.print(table)


def save(directory: Path, info: dict[str, Any], sections: list[Section], *, quick: bool, seconds: float) -> Path:
    """Write ``<date>-<machine>[-quick].json`` and copy it to ``latest[-quick].json``."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if quick else ""
    today = datetime.date.today().isoformat()
    path = directory / f"{today}-{slug(info)}{suffix}.json"
    document = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "seconds": round(seconds, 1),
        "machine": info,
        "targets": [
            {"benchmark": section.key, **target.as_json()} for section in sections for target in section.targets
        ],
        "benchmarks": {section.key: section.as_json() for section in sections},
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shutil.copyfile(path, directory / f"latest{suffix}.json")
    return path
