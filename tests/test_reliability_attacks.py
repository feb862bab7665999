"""The fast version of ``python -m reliability attacks``: issue 13's attacks, none succeeding."""

from __future__ import annotations

from pathlib import Path

from reliability.attacks import run_attacks


async def test_no_attack_of_issue_13_succeeds(tmp_path: Path) -> None:
    figures = await run_attacks(tmp_path, count=150)
    assert figures.cross_site_tries and figures.cross_site_accepted == 0
    assert figures.rebinding_tries and figures.rebinding_accepted == 0
    assert figures.missing_security_headers == 0 and figures.forged_log_lines == 0
    assert figures.statuses_500 == 0, figures.former_500_statuses
    assert (figures.queue_refused_at_once, figures.queue_completed) == (7, 5)
    assert figures.planted_cookies_adopted == 0
