"""The long versions of the suites; each adds its figures to a :class:`~reliability.report.Report`."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from h2ochat.server import start_server
from reliability.attacks import run_attacks
from reliability.badinput import Tally, prepare, send
from reliability.catalogue import catalogue
from reliability.cookies import attributes, cookie_attributes
from reliability.crash import backend_failures, kill_and_restart, sigterm_with_open_streams
from reliability.faults import HANG_BOUND, run_case
from reliability.junk import malformed_request, random_request
from reliability.load import run_load
from reliability.matrix import run_matrix
from reliability.ownership import guess_ids
from reliability.process import server_config
from reliability.report import Report

__all__ = ["attacks_suite", "badinput_suite", "cookie_suite", "crash_suite", "faults_suite", "fuzz_suite", "load_suite"]

ROOT = Path(__file__).resolve().parent.parent


async def faults_suite(report: Report, runs: int, seed: int, timeout: float, console: Console) -> None:
    await _catalogue(report)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"fault matrix ({runs} runs)", total=runs)
        summary = await run_matrix(runs, seed, timeout, progress=lambda *_: progress.advance(task))
    add = report.add
    add("faults", "random fault matrix: runs (seed)", f"{summary.runs} ({seed}), {summary.seconds:.0f} s")
    add("faults", "hangs (a call still running after 30 s)", summary.hangs, summary.hangs == 0)
    add("faults", "leaked conversations", summary.leaked, summary.leaked == 0)
    add("faults", "untyped exceptions", summary.untyped, summary.untyped == 0)
    add("faults", "outcomes not as required", summary.unexpected, summary.unexpected == 0)
    add("faults", "longest time to surface", f"{summary.max_seconds:.2f} s", summary.max_seconds < HANG_BOUND)
    add("faults", "cancelled by the runner (CancelledError)", summary.cancelled)
    add("faults", "deletes given up after injected refusals (warned)", summary.undeleted)
    add("faults", "orphaned: creation answer lost in transit", summary.orphaned)
    top = ", ".join(f"{name} {count}" for name, count in summary.outcomes.most_common(8))
    add("faults", "outcomes (most common)", top)
    report.details["fault_matrix"] = summary.as_json()


async def _catalogue(report: Report) -> None:
    cases = catalogue()
    records = [await run_case(case) for case in cases]
    for record in records:
        report.cases.append({**vars(record), "passed": record.passed, "seconds": round(record.seconds, 3)})
    failed = sum(1 for record in records if not record.passed)
    report.add("faults", "named faults as required", f"{len(cases) - failed}/{len(cases)}", failed == 0)
    slowest = max(records, key=lambda record: record.seconds)
    report.add("faults", "named faults: slowest to surface", f"{slowest.seconds:.2f} s ({slowest.case})")
    report.add(
        "faults",
        "named faults: leaked conversations",
        sum(r.leaked for r in records),
        not any(r.leaked for r in records),
    )


def fuzz_suite(report: Report, examples: int) -> None:
    """The hypothesis properties of tests/test_reliability_fuzz.py, with ``examples`` examples each."""
    started = time.monotonic()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_reliability_fuzz.py"]
    env = {**os.environ, "H2OCHAT_FUZZ_EXAMPLES": str(examples)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    report.add("fuzz", f"decoder properties, {examples} examples each", summary, done.returncode == 0)
    report.add("fuzz", "fuzz time", f"{time.monotonic() - started:.0f} s")
    report.details["fuzz_output"] = done.stdout[-4000:]


async def badinput_suite(report: Report, requests: int, malformed: int, guesses: int, seed: int) -> None:
    rng, tally, raw = random.Random(seed), Tally(), Tally()
    async with start_server(server_config(text="Hello there.")) as server:
        context = await prepare(server.url)
        for _ in range(requests):
            request = random_request(rng, context)
            tally.add(request, await send(context, request))
        for _ in range(malformed):
            request = malformed_request(rng, context)
            raw.add(request, await send(context, request))
        alive = (await send(context, random_request(random.Random(0), context))).status != 0
        guessed = await guess_ids(server.url, guesses, seed)
    _badinput_figures(report, requests, malformed, tally, raw, alive)
    add = report.add
    add("ownership", "ids guessed by another session (20% real ids)", f"{guessed.attempts} ({guessed.real_ids_tried})")
    add(
        "ownership",
        "reads / deletes / other successes",
        f"{guessed.reads} / {guessed.deletes} / {guessed.other_successes}",
        guessed.reads + guessed.deletes + guessed.other_successes == 0,
    )
    add("ownership", "answers distinguishable from 'not found'", guessed.distinguishable, guessed.distinguishable == 0)
    add("ownership", "victim's conversations unchanged", guessed.intact, guessed.intact)
    report.details["bad_input"] = {"random": vars(tally), "malformed": vars(raw), "guesses": vars(guessed)}


async def cookie_suite(report: Report, workdir: Path) -> None:
    found = await cookie_attributes(workdir / "tls")
    http, https = attributes(found["http"]), attributes(found["https"])
    report.add(
        "cookies",
        "hf-chat over HTTP",
        _attribute_list(found["http"]),
        {"httponly", "samesite"} <= http and "secure" not in http,
    )
    report.add(
        "cookies", "hf-chat over HTTPS", _attribute_list(found["https"]), {"httponly", "samesite", "secure"} <= https
    )
    report.details["cookies"] = found


def _attribute_list(cookie: str) -> str:
    return "; ".join(part.strip() for part in cookie.split(";")[1:])


def _badinput_figures(report: Report, requests: int, malformed: int, tally: Tally, raw: Tally, alive: bool) -> None:
    add, verdicts = report.add, tally.verdicts
    add("bad input", "random requests", requests)
    add("bad input", "answered 2xx/3xx / JSON 4xx", f"{verdicts['ok']} / {verdicts['json 4xx']}")
    failures = verdicts["5xx"] + verdicts["bad 4xx"] + verdicts["no answer"]
    add("bad input", "failures (5xx, non-JSON 4xx, no answer)", failures, failures == 0)
    parser = verdicts["parser 400"]
    add("bad input", "aiohttp's plain 400 before routing (known limit)", f"{parser} ({100 * parser / requests:.1f}%)")
    raw_new = raw.verdicts["5xx"] + raw.verdicts["bad 4xx"] + raw.verdicts["no answer"]
    add("bad input", "malformed HTTP requests", malformed)
    add(
        "bad input",
        "malformed HTTP: aiohttp's plain 400 / other",
        f"{raw.verdicts['parser 400']} / {raw.total - raw.verdicts['parser 400']}",
        raw_new == 0,
    )
    add("bad input", "server alive afterwards", alive, alive)


async def load_suite(report: Report, streams: int, seconds: float, workdir: Path) -> None:
    result = await run_load(workdir / "load", streams, seconds, warmup=seconds / 3)
    data = result.as_json()
    add = report.add
    add("load", "concurrent streams x seconds", f"{streams} x {seconds:.0f}")
    add(
        "load",
        "answers (per second) / tokens per second",
        f"{result.answers} ({data['answers_per_second']}) / {data['tokens_per_second']}",
    )
    add(
        "load",
        "errors / wrong answers",
        f"{result.error_count} / {result.wrong_answers}",
        result.error_count == 0 and result.wrong_answers == 0,
    )
    first = [data[f"first_token_{name}"] * 1000 for name in ("p50", "p99", "max")]
    add("load", "time to first token p50 / p99 / max", " / ".join(f"{ms:.0f}" for ms in first) + " ms")
    flat = result.rss_growth_mib < 8
    add(
        "load",
        "server RSS after warm-up -> peak",
        f"{data['rss_mib_after_warmup']} -> {data['rss_mib_peak_after_warmup']} MiB (+{data['rss_growth_mib']})",
        flat,
    )
    add("load", "RSS slope after warm-up", f"{data['rss_slope_mib_per_min']} MiB/min")
    add("load", "conversations left in the database", result.leaked_conversations, result.leaked_conversations == 0)
    report.details["load"] = data


async def crash_suite(report: Report, rounds: int, sigterms: int, streams: int, failures: int, workdir: Path) -> None:
    crash = await kill_and_restart(workdir / "kill", rounds)
    add = report.add
    add("kill -9", "rounds (restarts on the same database)", crash.rounds, crash.rounds == rounds)
    add("kill -9", "conversations completed / interrupted by a kill", f"{crash.completed} / {crash.interrupted}")
    saved = crash.saved_text_at_crash
    add(
        "kill -9",
        "interrupted answers with their text so far saved",
        f"{saved}/{crash.interrupted}",
        saved == crash.interrupted,
    )
    add("kill -9", "conversation checks after restarts", crash.checked)
    add("kill -9", "database integrity failures", crash.integrity_failures, crash.integrity_failures == 0)
    add("kill -9", "mismatches (lost, changed, unmarked)", len(crash.mismatches), not crash.mismatches)
    add("kill -9", "duplicates", crash.duplicates, crash.duplicates == 0)
    add("kill -9", "restart until listening, max", f"{max(crash.restart_seconds, default=0):.2f} s")
    report.details["kill"] = vars(crash)
    results = [await sigterm_with_open_streams(workdir / f"sigterm-{i}", streams) for i in range(sigterms)]
    total = sigterms * streams
    events = sum(r.final_error_events for r in results)
    half = sum(r.half_written for r in results)
    add("SIGTERM", "shutdowns x open streams", f"{sigterms} x {streams}")
    add("SIGTERM", "streams ending with an incomplete_generation event", f"{events}/{total}", events == total)
    exits = [r.exit_seconds for r in results if r.exit_code == 0]
    add(
        "SIGTERM",
        "clean exits, slowest",
        f"{len(exits)}/{sigterms}, {max(exits, default=0):.2f} s",
        len(exits) == sigterms,
    )
    add("SIGTERM", "half-written answers in the database", half, half == 0)
    report.details["sigterm"] = [vars(r) for r in results]
    failed = await backend_failures(failures, seed=7)
    add("backend failure", "answers failing after N tokens (random N)", failed.runs)
    add(
        "backend failure",
        "typed GenerationFailed with the partial text",
        f"{failed.typed}/{failed.runs}",
        failed.typed == failed.runs,
    )
    add(
        "backend failure",
        "partial answer saved as interrupted",
        f"{failed.saved_interrupted}/{failed.runs}",
        failed.saved_interrupted == failed.runs,
    )
    report.details["backend_failure"] = vars(failed)


async def attacks_suite(report: Report, count: int, workdir: Path) -> None:
    """Issue 13's attacks: none may succeed, nothing may grow without bound, no 5xx."""
    figures = await run_attacks(workdir / "attacks", count)
    add = report.add
    add(
        "attacks",
        "cross-site writes accepted",
        f"{figures.cross_site_accepted}/{figures.cross_site_tries}",
        figures.cross_site_accepted == 0,
    )
    add(
        "attacks",
        "foreign Host names accepted (DNS rebinding)",
        f"{figures.rebinding_accepted}/{figures.rebinding_tries}",
        figures.rebinding_accepted == 0,
    )
    add(
        "attacks",
        "security headers missing",
        f"{figures.missing_security_headers} in {figures.responses_checked}",
        figures.missing_security_headers == 0,
    )
    add("attacks", "forged log lines", figures.forged_log_lines, figures.forged_log_lines == 0)
    add(
        "attacks",
        "former 500s: 500 answers",
        f"{figures.statuses_500}/{figures.former_500_tries}",
        figures.statuses_500 == 0,
    )
    add("attacks", "former 500s: statuses", ", ".join(f"{k}: {v}" for k, v in figures.former_500_statuses.items()))
    refused = f"{figures.queue_refused_at_once}/{figures.queue_requests}, slowest {figures.queue_slowest_refusal_s} s"
    add(
        "attacks",
        "one place, queue of 4, 12 at once: refused at once",
        refused,
        figures.queue_refused_at_once == 7 and figures.queue_slowest_refusal_s < 1,
    )
    add(
        "attacks",
        "planted session cookies adopted",
        figures.planted_cookies_adopted,
        figures.planted_cookies_adopted == 0,
    )
    sessions = f"{figures.sessions_created} rows after {figures.cookieless_settings} cookie-less settings"
    add("attacks", "sessions created", sessions, figures.sessions_created <= 100)
    accepted = f"{figures.conversations_accepted}/{figures.conversations_tried}"
    add("attacks", "conversations accepted in one session", accepted, figures.conversations_accepted <= 1000)
    add("attacks", "database size after the runs", f"{figures.database_bytes / 1024:.0f} KiB")
    report.details["attacks"] = vars(figures)
