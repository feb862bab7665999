"""Slowloris against the server in its own process under ``ulimit -n`` (the fast version).

``python -m reliability slow`` runs the long one: 1,000 slow connections,
``ulimit -n 256``, the default limits, 40 s of normal requests beside them.
"""

from __future__ import annotations

from pathlib import Path

from reliability.report import Report
from reliability.slowclients import SlowResult, run_slow_clients, slow_figures
from reliability.slowsockets import Outcome


async def test_three_hundred_slow_connections_under_a_low_file_limit(tmp_path: Path) -> None:
    result = await run_slow_clients(
        tmp_path, slow=300, seconds=3, open_files=320, header_timeout=1, body_timeout=2, reopen=0.5
    )
    details = result.as_json()
    # Normal requests were answered, every one, while the slow connections were open.
    assert result.attacked and not result.failed_attacked, details
    assert result.emfile == 0, details  # the server never ran out of descriptors
    # The limit of 320 descriptors held fewer connections than the attackers tried: the cap shrank to fit.
    assert 50 < result.cap < 300
    server = result.server
    # Every slow head was closed by its limit or evicted (reopening every 0.5 s, most are evicted first);
    # the bodies, being requests in progress, are never evicted: their limit closes them.
    closed = [outcome for outcome in result.outcomes if outcome.kind != "body" and outcome.closed]
    assert server["header_timeout"] + server["evicted"] >= len(closed) > 300, details
    assert server["body_timeout"] >= 3, details
    assert result.answered_408 > 0
    # No slow connection outlived its limit (a second of slack for a busy machine).
    assert max(result.longest_open("idle"), result.longest_open("head")) < 1 + 2, details
    assert result.longest_open("body") < 2 + 2, details
    assert result.left_open("idle", 3) == result.left_open("head", 3) == 0, details


def test_the_report_counts_connections_the_server_never_closed() -> None:
    # A slow connection still open at the end of the run, 40 s after connecting: the server never
    # closed it. The report used to look only at closed ones, and called such a run perfect.
    result = SlowResult(slow=2, open_files=None, header_timeout=10, body_timeout=30, cap=1000)
    result.outcomes = [Outcome("idle", closed=False, seconds=40.0), Outcome("head", closed=True, seconds=10.2)]
    report = Report({})
    slow_figures(report, "slow clients", result)
    figures = {figure.name: figure for figure in report.figures}
    assert result.longest_open("idle") == 40.0
    held = figures["longest a slow head held its connection"]
    assert held.value == "40.0 s" and held.ok is False
    never = figures["slow connections never closed, open past their limit (and 2 s)"]
    assert never.value == "1" and never.ok is False
