"""The reattach suite, small: answers cut at random points come whole, each event once."""

from __future__ import annotations

from reliability.reattach import run_reattach


async def test_cut_answers_come_whole_with_no_event_missing_or_repeated() -> None:
    result = await run_reattach(streams=16, seed=3)
    assert result.failed == []
    assert result.cut >= 8  # most cuts fall inside the body (some past its end: nothing to cut)
    assert (result.whole, result.missing, result.repeated) == (16, 0, 0)
