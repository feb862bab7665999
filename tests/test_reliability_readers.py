"""Clients that stop reading, against the server in its own process (the fast version).

``python -m reliability readers`` runs the long one: 1,000 sockets that stop reading and 32 streams
whose readers stop, under the default cap of 1,000 connections, 40 s of normal requests beside them.
"""

from __future__ import annotations

from pathlib import Path

from reliability.readers import run_readers


async def test_three_hundred_stopped_readers_and_sixteen_stopped_streams(tmp_path: Path) -> None:
    result = await run_readers(
        tmp_path, readers=300, streams=16, seconds=4, write_timeout=1, max_connections=100, reopen=0.5
    )
    details = result.as_json()
    # Normal requests were answered, every one, beside them.
    assert result.attacked and not result.failed_attacked, details
    assert result.emfile == 0, details
    # The readers past the cap were evicted, and their clients saw it: the server's count is of
    # connections it really closed (it used to count closes that never happened); the few others
    # were evicted before they had sent their request or seen their answer begin.
    evicted, seen = result.server["evicted"], details["readers_closed"]
    assert 300 < seen <= evicted and evicted - seen <= evicted // 20, details
    # Every stream whose reader stopped was ended by write_timeout, its place freed.
    assert details["streams_cut_by_write_timeout"] == details["streams_closed"] == 16, details
    assert result.longest("stream") < 1 + 4, details  # two waves of 8 on the 8 places, and slack
