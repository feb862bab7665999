"""Benchmarks of issue 5: h2ochat's client and server against their comparisons, side by side.

Run ``python -m bench`` (or ``--quick``, ``--only decode,latency``); see ``bench/README.md``.
Nothing here runs under pytest except ``tests/test_bench_smoke.py``, which only proves the code works.
"""

from __future__ import annotations

__all__: list[str] = []
