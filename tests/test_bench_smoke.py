"""The benchmarks' code works: each one runs with tiny sizes, and its report prints and saves.

Nothing here is timed or compared; ``python -m bench`` does the measuring.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from bench import batching, concurrency, decode, latency, model, page, replicas, throughput
from bench.__main__ import parse
from bench.common import Section
from bench.report import machine, print_machine, print_section, print_summary, save
from rich.console import Console


def check(section: Section) -> Section:
    assert section.rows and section.targets
    assert all(row.stats.samples for row in section.rows)
    return section


def test_every_available_decoder_yields_the_token_texts() -> None:
    section = check(decode.run(events=200, repeats=1))
    decoders, missing = decode.available()
    assert {row.name for row in section.rows} == {*decoders, decode.NDJSON, decode.NDJSON_PER_TOKEN}
    assert decode.OURS in decoders and len(decoders) + len(missing) == len(decode.DECODERS)


def test_throughput_runs_against_the_replay_server() -> None:
    check(throughput.run(tokens=100, repeats=1, long_answer=0))


def test_latency_runs_through_the_delay_proxy() -> None:
    section = check(latency.run(delay=0.005, repeats=1, pause=0.01))
    assert {row.case for row in section.rows} >= {"loopback", "through the proxy"}


def test_concurrency_runs_against_the_h2ochat_server() -> None:
    section = check(concurrency.run(conversations=5, repeats=1))
    assert section.row("5 conversations", "completed").stats.median == 5, section.targets


def test_replicas_runs_on_sqlite_and_postgresql(pg_cluster: object) -> None:
    if pg_cluster is None:
        pytest.skip("PostgreSQL is not installed here (apt-get install -y postgresql); CI runs this")
    section = check(replicas.run(conversations=4, concurrency=2, streams=10, repeats=1, counted=2))
    assert section.row("10 streams at once, 2 replicas", "completed").stats.median == 10
    assert {row.name for row in section.rows} >= {"SQLite, 1 server", "PostgreSQL, 2 replicas"}
    for name in ("SQLite, 1 server", "PostgreSQL, 1 replica"):  # counted, each step sending some
        assert section.row("database statements per POST /conversation/<id>", name).stats.median >= 1


def test_page_runs_in_chromium() -> None:
    from tests.browser import browser_or_skip

    browser_or_skip()
    section = check(page.run(tokens=60, delay=0.001, loads=1, repeats=1))
    assert section.row("token to paint, 60 tokens", "tokens traced").stats.median >= 60


@pytest.mark.model
def test_model_runs_both_sides() -> None:
    check(model.run(max_new_tokens=4, repeats=1))


def test_report_prints_and_saves(tmp_path: Path) -> None:
    section = decode.run(events=50, repeats=2)
    console = Console(file=io.StringIO(), width=150)
    info = machine()
    print_machine(console, info)
    print_section(console, section)
    print_summary(console, [section])
    assert "Decoding cost per event" in console.file.getvalue()  # type: ignore[attr-defined]
    path = save(tmp_path, info, [section], quick=True, seconds=1.0)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["benchmarks"]["decode"]["rows"][0]["median"] > 0
    assert (tmp_path / "latest-quick.json").read_text(encoding="utf-8") == path.read_text(encoding="utf-8")


def test_command_line_options() -> None:
    assert parse(["--quick", "--only", "decode,latency"]).names == ["decode", "latency"]
    with pytest.raises(SystemExit):
        parse(["--only", "nonsense"])


@pytest.mark.model
def test_batching_runs_every_server_and_plots(tmp_path: Path) -> None:
    section = check(batching.run(concurrency=(1, 2), max_new_tokens=4, repeats=1))
    servers = {row.name for row in section.rows}
    assert {batching.BATCHED, batching.ONE_AT_A_TIME, batching.LLAMA_CPP_PYTHON} <= servers
    assert (batching.LLAMA_SERVER in servers) == (batching.llama_server() is not None)
    equal = section.row(batching.EQUAL_TO_ALONE, batching.BATCHED)  # 3 answers: 1 at once, then 2
    assert equal.unit == "of 3" and 0 <= equal.stats.median <= 3
    image = batching.plot(section, tmp_path / "batching.png")
    assert image.read_bytes().startswith(b"\x89PNG")
