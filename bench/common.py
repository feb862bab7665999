"""What every benchmark shares: statistics over repeats, result sections, child processes.

A benchmark module exposes ``run(**sizes) -> Section``.  A :class:`Section`
holds rows (one implementation in one case, with every repeat's sample),
the targets of issue 5 and whether each was met, and notes that explain the
figures.  ``bench.report`` turns sections into the table and the JSON file.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# The repository root: child processes run there, so that ``python -m bench.<module>`` finds this package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

__all__ = [
    "ROOT",
    "Child",
    "announce",
    "Row",
    "Section",
    "Stats",
    "Target",
    "Timer",
    "cpu_seconds",
    "paired_ratio",
    "raise_fd_limit",
    "start_child",
    "timed",
]


@dataclass
class Stats:
    """Samples of one figure over repeated runs; the median is what the tables compare."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def quartiles(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    def as_json(self) -> dict[str, Any]:
        q1, q3 = self.quartiles
        return {
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "q1": q1,
            "q3": q3,
            "samples": self.samples,
        }


@dataclass
class Row:
    """One implementation measured in one case, e.g. ``naive`` decoding 64 KiB reads."""

    case: str
    name: str
    stats: Stats
    unit: str
    ratio: float | None = None  # h2ochat's advantage over this row (see Section.ratio_label), or None
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"case": self.case, "name": self.name, "unit": self.unit, "ratio": self.ratio, "note": self.note} | (
            self.stats.as_json()
        )


@dataclass
class Target:
    """One goal of issue 5, whether this run met it, and by how much."""

    goal: str
    met: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"goal": self.goal, "met": self.met, "detail": self.detail}


@dataclass
class Section:
    """The results of one benchmark."""

    key: str
    title: str
    ratio_label: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, case: str, name: str, samples: list[float], unit: str, note: str = "") -> Row:
        row = Row(case, name, Stats(list(samples)), unit, note=note)
        self.rows.append(row)
        return row

    def row(self, case: str, name: str) -> Row:
        return next(row for row in self.rows if row.case == case and row.name == name)

    def compare(self, case: str, reference: str, *, higher_is_better: bool) -> None:
        """Fill in each row's ratio against ``reference`` (h2ochat's row).

        The ratio is always "how many times better ``reference`` is": above 1,
        h2ochat wins; below 1, it loses.  It is the median of the per-repeat
        ratios: every repeat runs all sides back to back, so a burst of load
        from elsewhere on the machine hits both sides of a pair alike.
        """
        ours = self.row(case, reference).stats.samples
        for row in self.rows:
            if row.case != case or row.name == reference:
                continue
            row.ratio = paired_ratio(ours, row.stats.samples, higher_is_better=higher_is_better)

    def against(self, case: str, baseline: str, *, higher_is_better: bool) -> None:
        """The other way round: each row's ratio is how many times better it is than ``baseline``."""
        theirs = self.row(case, baseline).stats.samples
        for row in self.rows:
            if row.case == case and row.name != baseline:
                row.ratio = paired_ratio(row.stats.samples, theirs, higher_is_better=higher_is_better)

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "ratio": self.ratio_label,
            "parameters": self.parameters,
            "seconds": round(self.seconds, 1),
            "rows": [row.as_json() for row in self.rows],
            "targets": [target.as_json() for target in self.targets],
            "notes": self.notes,
        }


def paired_ratio(ours: list[float], theirs: list[float], *, higher_is_better: bool) -> float | None:
    """The median over repeats of how many times better ``ours`` is than ``theirs``."""
    pairs = [(a, b) for a, b in zip(ours, theirs, strict=True) if a and b]
    if not pairs:
        return None
    return statistics.median(a / b if higher_is_better else b / a for a, b in pairs)


@dataclass
class Timer:
    """Elapsed seconds of a ``timed()`` block: wall clock, and CPU time of the calling thread."""

    wall: float = 0.0
    cpu: float = 0.0


@contextlib.contextmanager
def timed() -> Iterator[Timer]:
    """``with timed() as timer: ...``, then ``timer.wall`` and ``timer.cpu`` in seconds.

    Garbage from the previous measurement is collected first so that it is
    not charged to this one; the collector stays on during the measurement,
    as it is in a real client.
    """
    gc.collect()
    timer = Timer()
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        yield timer
    finally:
        timer.wall = time.perf_counter() - wall
        timer.cpu = time.thread_time() - cpu


# Child processes ----------------------------------------------------------------------------------


@dataclass
class Child:
    """A helper process (replay server, proxy, h2ochat server) and what it announced."""

    process: subprocess.Popen[str]
    info: dict[str, Any]

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def start_child(module: str, *args: str, ready_timeout: float = 120.0) -> Iterator[Child]:
    """Run ``python -m <module> <args>`` until the block ends.

    The child prints one JSON line (at least ``{"url": ...}``) once it serves;
    it is stopped with SIGTERM, then killed if it lingers.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        info = _read_ready_line(process, module, ready_timeout)
        yield Child(process, info)
    finally:
        _stop(process)


def _read_ready_line(process: subprocess.Popen[str], module: str, limit: float) -> dict[str, Any]:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(limit):
            raise RuntimeError(f"{module} did not start within {limit} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"{module} exited with status {process.wait()} before it was ready")
    return dict(json.loads(line))


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime and stime: fields 14 and 15


def raise_fd_limit(needed: int) -> int:
    """Raise this process's open-file limit towards ``needed`` (at most the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def announce(**info: Any) -> None:
    """What a child process prints once it is ready (read by :func:`start_child`)."""
    print(json.dumps(info), flush=True)
