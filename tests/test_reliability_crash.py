"""The server in its own process under load, killed with -9, stopped with SIGTERM (fast versions).

``python -m reliability`` runs the long versions: 200 streams for 60 s,
20 kill -9 rounds, repeated SIGTERMs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from h2ochat import GenerationFailed, H2o
from h2ochat.server import start_server
from reliability.crash import backend_failures, kill_and_restart, sigterm_with_open_streams
from reliability.load import run_load
from tests.helpers import FIXED_MODEL, fixed_config


async def test_fifty_streams_for_five_seconds(tmp_path: Path) -> None:
    result = await run_load(tmp_path, streams=50, seconds=5, warmup=2)
    assert result.errors == {} and result.wrong_answers == 0
    assert result.answers >= 50  # every stream finished at least one answer
    assert (result.leaked_conversations, result.messages_left) == (0, 0)
    # A sanity bound only (5 s says little about leaks; the long run measures flatness).
    assert result.rss_growth_mib < 64, result.as_json()["rss_samples"]


async def test_kill_9_twice_loses_nothing(tmp_path: Path) -> None:
    result = await kill_and_restart(tmp_path, rounds=2)
    assert result.rounds == 2 and result.completed == 6 and result.interrupted == 8
    assert result.mismatches == [] and result.duplicates == 0 and result.integrity_failures == 0
    assert result.still_generating_at_crash == 8  # the crash really caught answers in progress
    assert result.saved_text_at_crash == 8  # and their text so far had been saved
    assert result.checked == 7 + 14


async def test_sigterm_ends_open_streams_cleanly(tmp_path: Path) -> None:
    result = await sigterm_with_open_streams(tmp_path, streams=5)
    assert result.problems == []
    assert result.final_error_events == 5 and result.half_written == 0
    assert result.exit_code == 0 and result.exit_seconds < 20


async def test_backend_failing_mid_answer() -> None:
    result = await backend_failures(runs=6, seed=4)
    assert result.problems == []
    assert (result.typed, result.saved_interrupted) == (6, 6)


async def test_backend_failure_reaches_the_provider_typed() -> None:
    async with start_server(fixed_config(text="one two three four", fail_after=3)) as server:
        with pytest.raises(GenerationFailed, match="failed on purpose") as caught:
            await H2o.create_async(FIXED_MODEL, [{"role": "user", "content": "Hi"}], url=server.url)
    assert caught.value.partial_text == "one two three" and caught.value.error_type == "generation"
