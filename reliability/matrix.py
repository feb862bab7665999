"""The random fault matrix: every kind of fault, placed at random, many times over.

Each run draws a fault kind, where it strikes (which step, which byte of the
answer, which event), how often it repeats and how many retries the client
has, then makes one call. Whatever the fault, three things must hold: the
call ends within a bound (no hang), no conversation the client knew of is
left undeleted unless its delete was itself refused (no leak), and anything
raised is an ``h2ochat.H2oChatError`` (or ``CancelledError`` when the runner
cancelled the call). Controls (no fault, or a caller leaving early) must
also give back the exact answer.
"""

from __future__ import annotations

import email.utils
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from h2ochat import ConnectError, ConnectTimeout, HTTPStatusError, ProxyError, ReadTimeout, Timeout
from h2ochat.protocol.errors import ERROR_TYPES
from h2ochat.protocol.sse import encode_event
from h2ochat.protocol.tgi import encode_error_event
from reliability.catalogue import ERROR_BODIES
from reliability.faults import HANG_BOUND, Case, Record, run_case
from reliability.faultserver import STEPS, Fault, answer_events, http_response, stream_response

__all__ = ["KINDS", "MatrixSummary", "random_case", "run_matrix"]

# Token texts for the answers: ASCII, multi-byte UTF-8, and characters that str.splitlines() would split on.
_TEXTS = ["Hello", " world", "!", " é", " 😀", " a\u2028b", " c\u0085d", " line\nbreak", ' "quoted"', " \\", ""]
_BAD_EVENTS = [
    b"data:{broken\n\n",
    b"data:[1, 2]\n\n",
    b"data:null\n\n",
    b'data:{"token": 5}\n\n',
    b'data:{"token": {"id": 1, "text": "\xff\xfe"}}\n\n',
    b'data:{"error": 5}\n\n',
]


@dataclass
class MatrixSummary:
    """The figures of one matrix run."""

    runs: int
    seed: int
    seconds: float
    hangs: int = 0
    leaked: int = 0
    untyped: int = 0
    unexpected: int = 0
    undeleted: int = 0  # the client asked, but every delete was refused by an injected fault
    orphaned: int = 0  # the creation answer was lost in transit: no client can know the id
    cancelled: int = 0
    max_seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, record: Record) -> None:
        self.hangs += record.hang
        self.leaked += record.leaked
        self.untyped += not record.typed
        self.unexpected += not record.passed
        self.undeleted += record.undeleted
        self.orphaned += record.orphaned
        self.cancelled += record.outcome == "CancelledError"
        self.max_seconds = max(self.max_seconds, record.seconds)
        self.outcomes[record.outcome] += 1
        entry = self.kinds.setdefault(kind, {"runs": 0, "outcomes": Counter(), "seconds": []})
        entry["runs"] += 1
        entry["outcomes"][record.outcome] += 1
        entry["seconds"].append(record.seconds)
        if not record.passed and len(self.failures) < 50:
            self.failures.append({"case": record.case, "outcome": record.outcome, "problems": record.problems})

    def as_json(self) -> dict[str, Any]:
        kinds = {
            kind: {
                "runs": entry["runs"],
                "outcomes": dict(entry["outcomes"]),
                "median_seconds": round(statistics.median(entry["seconds"]), 3),
                "max_seconds": round(max(entry["seconds"]), 3),
            }
            for kind, entry in sorted(self.kinds.items())
        }
        plain = {key: value for key, value in vars(self).items() if key not in ("kinds", "outcomes")}
        return {**plain, "outcomes": dict(self.outcomes), "kinds": kinds}


async def run_matrix(
    runs: int,
    seed: int,
    timeout: float = 1.0,
    hang_bound: float = HANG_BOUND,
    progress: Callable[[int, Record], None] | None = None,
    max_retries: int = 2,
) -> MatrixSummary:
    """``runs`` random faults, one call each, in sequence (timings stay honest on a busy machine)."""
    rng = random.Random(seed)
    started = time.monotonic()
    summary = MatrixSummary(runs, seed, 0.0)
    for index in range(runs):
        kind, case = random_case(rng, index, timeout, max_retries)
        record = await run_case(case, hang_bound)
        summary.add(kind, record)
        if progress is not None:
            progress(index, record)
    summary.seconds = time.monotonic() - started
    return summary


KINDS = (
    "none",
    "cut",
    "stall",
    "status",
    "content type",
    "bad event",
    "big event",
    "error event",
    "truncated",
    "refused",
    "tls",
    "proxy",
    "cancel",
    "break",
)


def random_case(rng: random.Random, index: int, timeout: float = 1.0, max_retries: int = 2) -> tuple[str, Case]:
    """A random fault (its kind, and the case to run)."""
    kind = rng.choice(KINDS)
    texts = [rng.choice(_TEXTS) for _ in range(rng.randint(1, 6))]
    events = answer_events(*texts)
    case = _BUILDERS[kind](rng, events, texts)
    case.name = f"#{index} {kind}: {case.name}"
    case.group = kind
    case.max_retries = rng.randint(0, max_retries)
    case.session = rng.random() < 0.25
    # Short limits only where something stalls or anything goes; the rest keep the generous
    # default, so that a busy machine cannot turn an expected ConnectError into a timeout.
    if case.loose or "stall" in case.env:
        case.timeout = Timeout(timeout)
    return kind, case


def _none(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    return Case("no fault", "", events=events, text="".join(texts))


def _break(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    return Case("caller leaves after the first token", "", events=events, break_early=True, text=texts[0])


def _cut(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    step, action, at, times = rng.choice(STEPS), rng.choice(("reset", "close")), rng.random(), rng.randint(1, 3)
    return Case(f"{action} {step} at {at:.2f} x{times}", "", [Fault(step, action, at, times=times)], events, loose=True)


def _stall(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    step, at, times = rng.choice(STEPS), rng.random(), rng.randint(1, 2)
    return Case(f"stall {step} at {at:.2f} x{times}", "", [Fault(step, "stall", at, times=times)], events, loose=True)


def _status(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    step, status, body = rng.choice(STEPS), rng.choice((429, 500, 502, 503, 504)), rng.choice(list(ERROR_BODIES))
    retry_after = rng.choice([None, "0", "1", email.utils.formatdate(time.time() + 1, usegmt=True), "soon", "\u00b2"])
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    raw, content_type, _ = ERROR_BODIES[body]
    times = rng.randint(1, 3)
    fault = Fault(step, "replace", response=http_response(status, raw, content_type, headers), times=times)
    return Case(f"{status} {body} on {step}, Retry-After {retry_after!r} x{times}", "", [fault], events, loose=True)


def _content_type(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    step = rng.choice(("conversation", "message"))
    answers = [
        http_response(200, b"<html><title>Log in</title></html>", "text/html"),
        http_response(200, b'{"unexpected": true}'),
        http_response(200, b"[" * 3000, "application/json"),
        http_response(200, b'{"conversationId": "\xff\xfe"}'),
        stream_response(events, content_type=rng.choice(("text/plain", "application/octet-stream"))),
    ]
    answer = rng.choice(answers)
    return Case(f"{step} answered {answer[:60]!r}", "", [Fault(step, "replace", response=answer)], events, loose=True)


def _bad_event(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    at = rng.randrange(len(events))
    bad = rng.choice([*_BAD_EVENTS, b"data:" + rng.randbytes(rng.randint(1, 40)) + b"\n\n"])
    return Case(f"event {at} is {bad[:40]!r}", "", events=[*events[:at], bad, *events[at:]], loose=True)


def _big_event(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    at, size, ended = rng.randrange(len(events)), rng.randint(4097, 20_000), rng.random() < 0.5
    big = encode_event("x" * size) if ended else b"data:" + b"x" * size
    rest = events[at:] if ended else []
    return Case(f"event {at} of {size} bytes, ended={ended}", "", events=[*events[:at], big, *rest], loose=True)


def _error_event(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    at, error_type = rng.randrange(len(events)), rng.choice([*ERROR_TYPES, "cosmic-rays"])
    bad = encode_error_event("something failed", error_type)
    return Case(f"error event {error_type!r} at {at}", "", events=[*events[:at], bad], loose=True)


def _truncated(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    at = rng.randrange(len(events))
    return Case(f"stream ends after {at} events", "", events=events[:at], loose=True)


def _refused(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    return Case("nothing listens", "", env="refused", expect=(ConnectError,))


def _tls(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    env = rng.choice(("tls", "https-to-plain"))
    return Case(env, "", env=env, expect=(ConnectError,))


def _proxy(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    env = rng.choice(
        [
            "http-proxy:auth",
            "http-proxy:forbid",
            "http-proxy:stall",
            "http-proxy:tunnel",
            "connect-proxy:auth",
            "connect-proxy:forbid",
            "connect-proxy:stall",
            "socks:refuse",
            "socks:auth",
            "socks:stall",
            "socks:tunnel",
            "proxy-refused",
        ]
    )
    mode = env.partition(":")[2]
    expect: tuple[type[BaseException], ...] | None = {
        "auth": (ProxyError,),
        "forbid": (ProxyError, HTTPStatusError),
        "refuse": (ProxyError,),
        "stall": (ConnectTimeout, ReadTimeout),
        "tunnel": None,
        "": (ProxyError,),
    }[mode]
    return Case(env, "", events=events, env=env, expect=expect, text="".join(texts) if expect is None else None)


def _cancel(rng: random.Random, events: list[bytes], texts: list[str]) -> Case:
    step, at, after = rng.choice(STEPS), rng.random(), rng.uniform(0.0, 0.3)
    faults = [Fault(step, "stall", at)]
    return Case(
        f"stall {step} at {at:.2f}, cancel after {after:.2f} s", "", faults, events, cancel_after=after, loose=True
    )


_BUILDERS: dict[str, Callable[[random.Random, list[bytes], list[str]], Case]] = {
    "none": _none,
    "cut": _cut,
    "stall": _stall,
    "status": _status,
    "content type": _content_type,
    "bad event": _bad_event,
    "big event": _big_event,
    "error event": _error_event,
    "truncated": _truncated,
    "refused": _refused,
    "tls": _tls,
    "proxy": _proxy,
    "cancel": _cancel,
    "break": _break,
}
