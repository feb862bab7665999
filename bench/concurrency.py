"""Benchmark 4: a thousand simultaneous conversations through one reused ``H2oSession``.

The project's server runs in its own process (``bench.server`` with the
fixed backend: no model, one word per token, no delay) and the client in
another (this module run with ``--client``), so that each one's CPU time and
memory are its own.  Figures: whether every conversation completed with the
whole answer, the wall time, the client's peak RSS, and the server's CPU
seconds per 1,000 tokens relayed (read from /proc before and after).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time

from bench.common import ROOT, Section, Target, cpu_seconds, raise_fd_limit, start_child
from bench.server import FIXED_MODEL

__all__ = ["ANSWER", "run"]

# 64 words: the fixed backend sends one token per word, then an EOS token.
ANSWER = (
    "Paris is the capital and largest city of France, on the Seine. It has been a centre of finance, "
    "diplomacy, commerce, fashion, science and the arts for centuries, and its museums, churches and "
    "boulevards draw millions of visitors every year. The city is also a major rail, highway and air "
    "transport hub served by two international airports, and it hosted the 2024 Olympic Games."
)
MESSAGES = [{"role": "user", "content": "Tell me about Paris."}]


def run(*, conversations: int = 1000, repeats: int = 3) -> Section:
    section = Section(
        "concurrency",
        f"4. Concurrency: {conversations:,} simultaneous conversations, one H2oSession, the h2ochat server",
        "",
        parameters={"conversations": conversations, "repeats": repeats, "tokens_per_answer": len(ANSWER.split()) + 1},
    )
    outcomes = []
    with start_child("bench.server", "--fixed", ANSWER) as server:
        for _ in range(repeats):
            before = cpu_seconds(server.pid)
            outcome = _client_process(server.url, conversations)
            outcome["server_cpu"] = cpu_seconds(server.pid) - before
            outcomes.append(outcome)
    case = f"{conversations:,} conversations"
    section.add(case, "completed", [o["completed"] for o in outcomes], "conversations")
    section.add(case, "wall time", [o["wall"] for o in outcomes], "s")
    section.add(case, "conversations per second", [o["completed"] / o["wall"] for o in outcomes], "conv/s")
    section.add(case, "tokens relayed", [o["tokens"] for o in outcomes], "tokens")
    section.add(case, "client peak RSS", [o["peak_rss"] / 2**20 for o in outcomes], "MiB")
    section.add(case, "client RSS added by the run", [o["added_rss"] / 2**20 for o in outcomes], "MiB")
    per_thousand = [o["server_cpu"] / o["tokens"] * 1000 for o in outcomes]
    section.add(case, "server CPU per 1,000 tokens", per_thousand, "CPU s")
    section.add(
        case, "server CPU per conversation", [o["server_cpu"] / o["completed"] * 1000 for o in outcomes], "CPU ms"
    )
    section.add(case, "client CPU per 1,000 tokens", [o["client_cpu"] / o["tokens"] * 1000 for o in outcomes], "CPU s")
    failures = sorted({error for o in outcomes for error in o["errors"]})
    section.targets.append(
        Target(
            f"all {conversations:,} conversations complete, every run",
            all(o["completed"] == conversations for o in outcomes),
            "every answer whole" if not failures else f"failures: {'; '.join(failures[:3])}",
        )
    )
    section.notes.append(
        "Server CPU covers everything the server does for a conversation (session gate, SQLite on its thread, "
        "creating, streaming and deleting it), divided by the tokens it relayed; the fixed backend costs next "
        "to nothing, so this is the server's own overhead."
    )
    return section


def _client_process(url: str, conversations: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.concurrency", "--client", url, "--conversations", str(conversations)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the concurrency client failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# The client process ----------------------------------------------------------------------------------


async def _client(url: str, conversations: int) -> dict[str, object]:
    from h2ochat import H2oSession

    baseline = _rss_now()
    cpu_before = _own_cpu()
    async with H2oSession(url, max_connections=conversations) as session:
        start = time.perf_counter()
        results = await asyncio.gather(*(_converse(session) for _ in range(conversations)), return_exceptions=True)
        wall = time.perf_counter() - start
    answers = [result for result in results if isinstance(result, tuple)]
    errors = sorted({repr(result)[:200] for result in results if not isinstance(result, tuple)})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "completed": sum(1 for text, _ in answers if text == ANSWER),
        "tokens": sum(tokens for _, tokens in answers),
        "wall": wall,
        "peak_rss": peak,
        "added_rss": peak - baseline,
        "client_cpu": _own_cpu() - cpu_before,
        "errors": errors,
    }


async def _converse(session: object) -> tuple[str, int]:
    result = session.stream(MESSAGES, FIXED_MODEL)  # type: ignore[attr-defined]
    text = await result.text()
    return text, result.generated_tokens


def _rss_now() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description="the client half of the concurrency benchmark")
    parser.add_argument("--client", required=True, metavar="URL")
    parser.add_argument("--conversations", type=int, default=1000)
    args = parser.parse_args()
    raise_fd_limit(args.conversations * 3 + 256)
    print(json.dumps(asyncio.run(_client(args.client, args.conversations))), flush=True)


if __name__ == "__main__":
    main()
