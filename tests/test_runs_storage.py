"""Runs and their logs in the store, on SQLite and PostgreSQL; reattaching across replicas."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from msgspec.structs import replace
from yarl import URL

from h2ochat.server import start_server
from h2ochat.server.storage import (
    ConversationGone,
    RunIdTaken,
    Store,
    StoreOptions,
    TooManyRunning,
    open_store,
)
from tests.helpers import FIXED_MODEL, RawClient, fixed_config
from tests.pgfixtures import opened
from tests.test_runs import TEXT, leave_after, reattach, tokens

Client = Callable[[str], RawClient]


async def begun(store: Store, session: str, answer: str, run: str, *, limit: int = 0) -> str:
    """A conversation with a question and its generating answer, under run ``run``."""
    conversation = (await store.create_conversation(session, FIXED_MODEL)).id
    found = await store.conversation(conversation, session)
    assert found is not None
    await store.begin_run(run, conversation, session, answer, "2023", limit=limit)
    await store.begin_exchange(conversation, found.root_id, (f"q-{answer}", "hi"), answer)
    return conversation


async def test_a_run_s_log_in_batches_its_end_and_its_compaction(store: Store) -> None:
    session = await store.new_session()
    conversation = await begun(store, session, "a1", "r1")
    await store.append_events("r1", 1, ["e1", "e2"])
    await store.append_events("r1", 3, ["e3", "e4", "e5"])
    assert await store.run_events("r1", 0) == [(1, "e1"), (2, "e2"), (3, "e3"), (4, "e4"), (5, "e5")]
    assert await store.run_events("r1", 3) == [(4, "e4"), (5, "e5")]
    row = await store.run(conversation, "r1")
    assert row is not None and row.status == "running" and row.generation == "2023"
    assert await store.running_answers(session) == [(conversation, "r1", "a1")]
    await store.finish_answer(
        conversation, "a1", "text", finish_reason="eos_token", interruption=None, generated_tokens=5
    )
    await store.end_run("r1", "completed", 4)
    row = await store.run(conversation)  # the newest
    assert row is not None and (row.id, row.status, row.last_seq, row.kept_from) == ("r1", "completed", 5, 4)
    assert await store.running_answers(session) == []
    await store.upkeep()  # within run_log_keep: kept whole
    assert len(await store.run_events("r1", 0)) == 5


async def test_compaction_keeps_the_closing_events(db: str) -> None:
    async with opened(db, run_log_keep=0.0) as store:
        session = await store.new_session()
        conversation = await begun(store, session, "a1", "r1")
        await store.append_events("r1", 1, ["e1", "e2", "e3"])
        await store.finish_answer(
            conversation, "a1", "t", finish_reason="length", interruption=None, generated_tokens=3
        )
        await store.end_run("r1", "completed", 3)
        await asyncio.sleep(0.01)
        await store.upkeep()
        assert await store.run_events("r1", 0) == [(3, "e3")]


async def test_the_session_s_running_limit_counts_only_answers_still_generating(store: Store) -> None:
    session, other = await store.new_session(), await store.new_session()
    await begun(store, session, "a1", "r1", limit=2)
    second = await begun(store, session, "a2", "r2", limit=2)
    with pytest.raises(TooManyRunning, match="max_running_answers"):
        await begun(store, session, "a3", "r3", limit=2)
    await begun(store, other, "b1", "s1", limit=2)  # another session's own count
    await store.finish_answer(second, "a2", "t", finish_reason="eos_token", interruption=None, generated_tokens=1)
    await begun(store, session, "a4", "r4", limit=2)  # a2 ended (its run not yet: the answer says so)


async def test_a_run_id_is_used_once_and_a_deleted_conversation_takes_its_runs(store: Store) -> None:
    session = await store.new_session()
    conversation = await begun(store, session, "a1", "r1")
    with pytest.raises(RunIdTaken):
        await begun(store, session, "a2", "r1")
    assert await store.delete_conversation(conversation, session)
    await store.append_events("r1", 1, ["late"])  # a generation that had not heard of the delete yet
    assert await store.run_events("r1", 0) == []
    with pytest.raises(ConversationGone):
        await store.begin_run("r9", conversation, session, "a9", "2023")


async def test_a_run_a_stopped_server_left_reads_interrupted(db: str) -> None:
    async with opened(db) as store:
        session = await store.new_session()
        conversation = await begun(store, session, "a1", "r1")
        await store.append_events("r1", 1, ["e1"])
    # Reopened as after a crash (SQLite marks what was generating; PostgreSQL marks this replica's at
    # its close): the run was never ended, and reads as interrupted.
    async with opened(db) as store:
        row = await store.run(conversation, "r1")
        assert row is not None and row.status == "interrupted"
        assert await store.running_answers(session) == []


async def test_a_reader_on_another_replica_is_told_of_new_events(postgres_url: str, raw_client: Client) -> None:
    config = replace(fixed_config(postgres_url, text=TEXT, delay=0.03), welcome_gate=False)
    async with start_server(config) as one, start_server(config) as two:
        writer = raw_client(one.url)
        conversation = await writer.create()
        first, run_id = await leave_after(writer, conversation, 3)
        reader = raw_client(two.url)  # the same session, on the other replica
        cookie = writer.http.cookie_jar.filter_cookies(URL(one.url))["hf-chat"].value
        reader.http.cookie_jar.update_cookies({"hf-chat": cookie}, URL(two.url))
        assert two.app  # the run is generated on one; two reads its log and is notified of the rest
        started = asyncio.get_running_loop().time()
        rest = await reattach(reader, conversation, f"?generationId={run_id}&fromSeq=3")
        took = asyncio.get_running_loop().time() - started
        assert [int(e.id) for e in rest[:-1]] == list(range(4, int(rest[-2].id) + 1))
        assert tokens(first + [e.data for e in rest[:-1]]) == TEXT
        assert json.loads(rest[-1].data) == {"status": "completed"}
        # Live, not polled at RECHECK's pace: the 60 tokens take ~1.8 s; polling would take far more reads.
        assert took < 10


async def test_open_store_applies_the_runs_migration_on_both(db: str) -> None:
    store = await open_store(db, StoreOptions())
    try:
        assert await store.running_answers("nobody") == []
    finally:
        await store.close()
