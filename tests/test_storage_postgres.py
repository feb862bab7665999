"""What only PostgreSQL does: stop requests between replicas, a database restarted under the store,
and a password that never shows. A real throwaway cluster; two stores on one database are two replicas.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest

from h2ochat.server.storage import StoreOptions, StoreUnavailable, open_store, redact
from h2ochat.server.storage.postgres import PostgresStore
from tests.helpers import append
from tests.pgcluster import PASSWORD


async def replica(url: str) -> PostgresStore:
    store = await open_store(url, StoreOptions(pool_size=3))
    assert isinstance(store, PostgresStore)
    await asyncio.wait_for(store._stops.connected.wait(), 5)
    return store


async def test_a_stop_requested_on_one_replica_reaches_the_other_within_half_a_second(postgres_url: str) -> None:
    a, b = await replica(postgres_url), await replica(postgres_url)
    try:
        heard: dict[str, list[tuple[str, str, float]]] = {"a": [], "b": []}
        arrived = asyncio.Event()

        def on_a(conversation: str, reason: str) -> None:
            heard["a"].append((conversation, reason, time.monotonic()))
            arrived.set()

        a.on_stop(on_a)
        b.on_stop(lambda c, r: heard["b"].append((c, r, time.monotonic())))
        sent = time.monotonic()
        await b.request_stop("c0ffee", "stop-generating was requested")
        await asyncio.wait_for(arrived.wait(), 2)
        await asyncio.sleep(0.1)  # room for a duplicate to show up
        assert [(c, r) for c, r, _ in heard["a"]] == [("c0ffee", "stop-generating was requested")]
        assert heard["a"][0][2] - sent < 0.5
        assert len(heard["b"]) == 1  # the asking replica stops its own at once, and only once
    finally:
        await a.close()
        await b.close()


async def test_a_restarted_database_is_unavailable_then_reconnected_and_nothing_finished_is_lost(
    postgres_url: str, pg_cluster: Any
) -> None:
    a, b = await replica(postgres_url), await replica(postgres_url)
    try:
        session = await a.new_session()
        conversation = (await a.create_conversation(session, "m")).id
        await append(a, conversation, "u", "hello", "a")
        pg_cluster.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="try again"):
            await a.conversations(session)
        assert time.monotonic() - started < 12  # refused within the connect/command timeouts, never hanging
        await a.save_partial(conversation, "a", "Hel", 1)  # a checkpoint is skipped, not raised
        await a.finish_answer(
            conversation, "a", "Hello!", finish_reason="eos_token", interruption=None, generated_tokens=3
        )
        stopped_here: list[str] = []
        a.on_stop(lambda c, _r: stopped_here.append(c))
        with pytest.raises(StoreUnavailable):  # the other replicas cannot be told now…
            await a.request_stop(conversation, "stop-generating was requested")
        assert stopped_here == [conversation]  # …but this one stopped its own generation at once
        pg_cluster.start()
        await a.upkeep()  # the pool reconnects by itself; the kept final save is written
        answer = (await b.messages(conversation))[2]
        assert (answer.status, answer.content) == ("done", "Hello!")
        await asyncio.wait_for(a._stops.connected.wait(), 10)  # the listener came back too
        heard: asyncio.Queue[str] = asyncio.Queue()
        a.on_stop(lambda c, _r: heard.put_nowait(c))
        await b.request_stop("after-the-restart", "stop-generating was requested")
        assert await asyncio.wait_for(heard.get(), 1) == "after-the-restart"
    finally:
        await a.close()
        await b.close()


async def test_the_password_never_reaches_an_error_or_the_log(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = postgres_url.replace(PASSWORD, PASSWORD + "-wrong")
    closed_port = "postgresql://h2ochat:" + PASSWORD + "@127.0.0.1:1/none"
    for url in (wrong, closed_port):
        with pytest.raises(StoreUnavailable) as refused:
            await open_store(url)
        assert PASSWORD not in str(refused.value)
        assert "could not open the database postgresql://h2ochat:***@127.0.0.1" in str(refused.value)
    assert PASSWORD not in caplog.text
    assert redact("postgresql://u:p%40ss@h/db?sslmode=require&password=x") == (
        "postgresql://u:***@h/db?sslmode=require&password=***"
    )


async def test_leases_and_the_sweep_read_the_databases_clock_not_a_replicas(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19: a replica whose own clock runs 10 s behind (its time functions shifted while it
    acts) renewed a lease that the others read as 10 s old, and with a lease shorter than the skew
    they marked its live answers interrupted. Times now come from the database."""
    from h2ochat.server import storage
    from h2ochat.server.storage import postgres

    behind = {"seconds": 0.0}  # how far behind the replica acting now is
    real_now = storage.now

    def now(seconds_ago: float = 0.0) -> str:
        return real_now(seconds_ago + behind["seconds"])

    # The store read its replica's clock through this name; raising=False: once it reads none, it has none.
    monkeypatch.setattr(postgres, "now", now, raising=False)

    behind["seconds"] = 10.0
    late = await open_store(postgres_url, StoreOptions(lease=2.0))
    session = await late.new_session()
    conversation = (await late.create_conversation(session, "m")).id
    await append(late, conversation, "u", "hello", "a")
    await late.save_partial(conversation, "a", "still going", 2)
    await late.upkeep()
    behind["seconds"] = 0.0
    on_time = await open_store(postgres_url, StoreOptions(lease=2.0))
    try:
        await on_time.upkeep()
        answer = (await on_time.messages(conversation))[2]
        assert (answer.status, answer.content) == ("generating", "still going")
        assert await on_time.session(session) is not None
        stored = (await on_time.conversation(conversation, session)).created_at  # type: ignore[union-attr]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stored)  # as SQLite stores times
    finally:
        await on_time.close()
        await late.close()
