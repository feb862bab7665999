"""Client faults against a fault-injecting loopback server (fast version).

Each named fault must surface as its exact typed error (or a normal answer,
for faults the client absorbs), without hanging, with the conversation
deleted. Then a fixed-seed sample of the random fault matrix; ``python -m
reliability faults`` runs it 1,000 times and more.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from h2ochat import ConnectError, ReadError, Timeout
from reliability.catalogue import catalogue
from reliability.faults import Case, run_case
from reliability.faultserver import Fault, FaultServer
from reliability.matrix import KINDS, run_matrix

SURFACED_WITHIN = 20.0  # "no hang": generous, a loaded machine must not make it flaky


def _params() -> list[object]:
    # By name, built again inside the test: some cases hold times (HTTP dates) relative to now.
    return [pytest.param(case.name, id=case.name) for case in catalogue()]


def test_case_names_are_unique() -> None:
    names = [case.name for case in catalogue()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", _params())
async def test_named_fault(name: str) -> None:
    case = next(case for case in catalogue() if case.name == name)
    record = await run_case(case)
    assert record.problems == [], record
    assert record.seconds < SURFACED_WITHIN


async def test_random_fault_matrix_sample() -> None:
    summary = await run_matrix(100, seed=20240601, timeout=0.3, max_retries=1)
    assert (summary.hangs, summary.leaked, summary.untyped) == (0, 0, 0)
    assert summary.unexpected == 0, summary.failures
    assert set(summary.kinds) == set(KINDS)  # the sample reached every kind of fault


# The judge itself can fail: a wrong expectation, a leak and a hang are all caught. -----------------


async def test_a_wrong_expectation_is_reported() -> None:
    record = await run_case(Case("wrong", "meta", expect=(ConnectError,)))
    assert record.outcome == "ok" and any("expected ConnectError" in p for p in record.problems)


async def test_a_leak_is_reported() -> None:
    async with FaultServer() as server:
        url = await server.start()
        async with aiohttp.ClientSession() as http, http.post(f"{url}/conversation", json={}) as response:
            conversation = (await response.json())["conversationId"]
        assert server.leaked == {conversation} and server.undeleted == set()


async def test_a_hang_is_reported() -> None:
    case = Case("hang", "meta", [Fault("message", "stall")], timeout=Timeout(None), expect=(ReadError,))
    record = await run_case(case, hang_bound=0.5)
    assert record.hang and "hung" in record.problems
    await asyncio.sleep(0)
