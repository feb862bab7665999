"""Figures: rows of (suite, figure, value, requirement met?), printed with rich and saved as JSON."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["Figure", "Report"]

_LOCAL_URL = re.compile(r"https?://127\.0\.0\.1:\d+")
_ID = re.compile(r"\b[0-9a-f]{24}\b")


def _short(message: str) -> str:
    """A message without the addresses and ids that change every run."""
    return _ID.sub("<id>", _LOCAL_URL.sub("", message))[:110]


@dataclass
class Figure:
    suite: str
    name: str
    value: str
    ok: bool | None = None  # None: a figure reported, no requirement attached


def _machine() -> dict[str, Any]:
    """What the figures depend on; the load average because other work on the machine shows in them."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "load_average": _load(),
    }


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def _load() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


@dataclass
class Report:
    settings: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=_machine)  # taken when the run starts
    details: dict[str, Any] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)

    def add(self, suite: str, name: str, value: object, ok: bool | None = None) -> None:
        self.figures.append(Figure(suite, name, str(value), ok))

    @property
    def passed(self) -> bool:
        return all(figure.ok is not False for figure in self.figures)

    def print(self, console: Console) -> None:
        if self.cases:
            console.print(self._cases_table())
        table = Table(title="h2ochat reliability figures", show_lines=False)
        for column in ("suite", "figure", "value", "ok"):
            table.add_column(column, overflow="fold")
        for figure in self.figures:
            mark = {True: "[green]yes[/]", False: "[bold red]NO[/]", None: ""}[figure.ok]
            table.add_row(figure.suite, figure.name, figure.value, mark)
        console.print(table)

    def _cases_table(self) -> Table:
        table = Table(title="client faults, one of each (exception, time to surface, conversations)")
        for column in ("case", "outcome", "s", "created/deleted", "message", "ok"):
            table.add_column(column, overflow="fold")
        for case in self.cases:
            ok = "[green]yes[/]" if case["passed"] else "[red]NO[/]"
            books = f"{case['created']}/{case['deleted']}" + (
                f" (+{case['orphaned']} orphaned)" if case["orphaned"] else ""
            )
            outcome = case["outcome"] + (" + DeleteFailedWarning" if case["warned"] else "")
            table.add_row(case["case"], outcome, f"{case['seconds']:.2f}", books, _short(case["message"]), ok)
        return table

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        payload = {
            "when": stamp,
            "machine": {**self.machine, "load_average_after": _load()},
            "settings": self.settings,
            "passed": self.passed,
            "figures": [vars(figure) for figure in self.figures],
            "cases": self.cases,
            "details": self.details,
        }
        path = directory / f"reliability-{stamp}.json"
        text = json.dumps(payload, indent=2, default=str)
        path.write_text(text, encoding="utf-8")
        (directory / "latest.json").write_text(text, encoding="utf-8")
        return path
