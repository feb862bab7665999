"""The storage interface, proven on each implementation: every test runs on SQLite and on PostgreSQL.

PostgreSQL is a real throwaway cluster (tests/pgcluster.py, one fresh database per test); where two
stores open the same database they stand for two replicas of the server.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import asyncpg
import pytest

from h2ochat.server.storage import (
    ConversationGone,
    MessageIdTaken,
    SchemaTooNew,
    Store,
    StoreOptions,
    TooManyConversations,
    TooManyMessages,
    is_postgres,
    now,
    open_store,
)
from h2ochat.server.storage.postgres import PostgresStore
from h2ochat.server.storage.web_searches import StoredSearch
from tests.helpers import append
from tests.pgfixtures import opened


async def raw(db: str, sql: str) -> None:
    """A statement straight to the database, past the store."""
    if is_postgres(db):
        connection = await asyncpg.connect(db)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()
    else:
        with sqlite3.connect(db) as connection:
            connection.execute(sql)
        connection.close()


async def exchange(store: Store, conversation: str, n: int, *, answer: str = "fine") -> str:
    """One finished exchange; the answer's id."""
    answer_id = f"a{n}"
    await append(store, conversation, f"u{n}", f"question {n}", answer_id)
    await store.finish_answer(
        conversation, answer_id, answer, finish_reason="eos_token", interruption=None, generated_tokens=2
    )
    return answer_id


# Sessions ---------------------------------------------------------------------------------------


async def test_sessions_are_issued_unguessable_and_only_issued_ones_count(store: Store) -> None:
    ids = {await store.new_session() for _ in range(20)}
    assert len(ids) == 20
    assert all(len(session_id) >= 43 for session_id in ids)  # 256 random bits, URL-safe base64
    for session_id in ids:
        session = await store.session(session_id)
        assert session is not None and session.id == session_id
    assert await store.session("0f0e7c36-8c1a-4f5e-9a3b-2d8b6f1c9e00") is None  # well-formed, never issued


async def test_settings_are_kept_and_the_settings_step_moves_the_session_to_a_fresh_id(store: Store) -> None:
    old = await store.new_session()
    conversation = (await store.create_conversation(old, "m")).id
    search = StoredSearch("search-1", conversation, "q", "{}", None, now())
    await store.save_web_search(search, old)
    await store.save_settings(old, "m", True, True, search=True)
    fresh = await store.renew_session(old)
    assert fresh != old
    assert await store.session(old) is None
    session = await store.session(fresh)
    assert session is not None
    assert (session.active_model, session.share_conversations, session.search_enabled) == ("m", True, True)
    # The session's web searches go with it (GET /search/<id> still finds them), and nothing stays behind.
    assert await store.web_search("search-1", fresh) == search
    assert await store.web_search("search-1", old) is None
    assert session.ethics_accepted_at is not None
    assert [c.id for c in await store.conversations(fresh)] == [conversation]
    assert await store.conversations(old) == []
    # A visitor without a session: the settings step issues one holding its settings.
    issued = await store.save_settings("", "m", False, True)
    assert len(issued) >= 43 and issued not in (old, fresh)
    found = await store.session(issued)
    assert found is not None and found.active_model == "m" and found.ethics_accepted_at is not None


async def test_idle_sessions_expire_with_their_conversations(db: str) -> None:
    async with opened(db, session_idle=3.0) as store:
        idle = await store.new_session()
        conversation = (await store.create_conversation(idle, "m")).id
        await exchange(store, conversation, 0)
        await asyncio.sleep(3.1)
        busy = await store.new_session()
        assert await store.session(idle) is None  # expired before the cleanup runs
        await store.upkeep()
        assert await store.messages(conversation) == []
        assert await store.conversation(conversation, idle) is None
        assert await store.session(busy) is not None


async def test_a_session_in_use_stays_alive(db: str) -> None:
    """A lookup more than a quarter of ``session_idle`` after the last use counts as a use."""
    async with opened(db, session_idle=4.0) as store:
        session = await store.new_session()
        await asyncio.sleep(2.5)
        assert await store.session(session) is not None  # used again, 2.5 s after it was issued…
        await asyncio.sleep(2.5)
        assert await store.session(session) is not None  # …so alive 5 s after, 2.5 s after its last use
        await asyncio.sleep(4.1)
        assert await store.session(session) is None


# Conversations ----------------------------------------------------------------------------------


async def test_a_conversation_left_without_a_message_is_removed_after_orphan_ttl(db: str) -> None:
    """Issue 19: a conversation whose first message never came (the client lost the answer to its
    creation) stayed until its session expired. Conversations with messages, or a title given
    since they were created, stay."""
    async with opened(db, orphan_ttl=1.0) as store:
        session = await store.new_session()
        orphan = (await store.create_conversation(session, "m")).id
        used = (await store.create_conversation(session, "m")).id
        await exchange(store, used, 0)
        named = (await store.create_conversation(session, "m")).id
        await asyncio.sleep(1.1)
        assert await store.rename_conversation(named, session, "For later")  # a person's touch
        fresh = (await store.create_conversation(session, "m")).id
        assert orphan in {c.id for c in await store.conversations(session)}  # until the upkeep runs
        await store.upkeep()
        assert {c.id for c in await store.conversations(session)} == {used, named, fresh}


async def test_a_conversation_belongs_to_its_session_only(store: Store) -> None:
    mine, theirs = await store.new_session(), await store.new_session()
    first = (await store.create_conversation(mine, "m")).id
    second = (await store.create_conversation(mine, "m")).id
    assert len(first) == 24 and int(first, 16) >= 0
    assert await store.conversation(first, theirs) is None
    assert await store.conversation_with_messages(first, theirs) is None
    await exchange(store, second, 0)
    assert await store.conversation_with_messages(second, mine) == (
        await store.conversation(second, mine),
        await store.messages(second),
    )
    assert not await store.rename_conversation(first, theirs, "stolen")
    assert not await store.delete_conversation(first, theirs)
    assert await store.conversations(theirs) == []
    await asyncio.sleep(0.005)  # times are kept to the millisecond
    await store.rename_conversation(first, mine, "Renamed")
    listed = await store.conversations(mine)
    assert [c.id for c in listed] == [second, first]  # a new name is no news: the order stays (issue 26)
    assert listed[1].title == "Renamed"
    assert await store.delete_conversation(first, mine)
    assert await store.conversation(first, mine) is None


async def test_a_rename_can_wait_on_the_title_it_replaces(store: Store) -> None:
    mine = await store.new_session()
    conversation = (await store.create_conversation(mine, "m")).id
    await store.rename_conversation(conversation, mine, "Set by hand")
    assert not await store.rename_conversation(conversation, mine, "Generated", only_if="New Chat")
    assert (await store.conversation(conversation, mine)).title == "Set by hand"  # type: ignore[union-attr]
    assert await store.rename_conversation(conversation, mine, "Generated", only_if="Set by hand")
    assert (await store.conversation(conversation, mine)).title == "Generated"  # type: ignore[union-attr]


async def test_search_finds_titles_and_messages_of_the_session_only(store: Store) -> None:
    mine, theirs = await store.new_session(), await store.new_session()
    titled = (await store.create_conversation(mine, "m")).id
    await store.rename_conversation(titled, mine, "Trip to PARIS")
    talked = (await store.create_conversation(mine, "m")).id
    await exchange(store, talked, 0, answer="Paris has 100% of the charm")
    foreign = (await store.create_conversation(theirs, "m")).id
    await store.rename_conversation(foreign, theirs, "paris too")
    assert {c.id for c in await store.search_conversations(mine, "paris")} == {titled, talked}
    assert [c.id for c in await store.search_conversations(mine, "100%")] == [talked]
    assert await store.search_conversations(mine, "1_0") == []  # "_" is itself, not any character
    assert await store.search_conversations(theirs, "charm") == []


async def test_the_conversation_cap_is_exact_under_concurrent_creates(db: str) -> None:
    async with opened(db) as one, opened(db) as other:
        session = await one.new_session()
        tries = [(one if i % 2 else other).create_conversation(session, "m", limit=5) for i in range(12)]
        results = await asyncio.gather(*tries, return_exceptions=True)
    created = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, TooManyConversations)]
    assert (len(created), len(refused)) == (5, 7)
    assert "delete some" in str(refused[0])


# Messages ---------------------------------------------------------------------------------------


async def test_a_conversation_is_a_tree_under_its_system_root(store: Store) -> None:
    session = await store.new_session()
    conversation = (await store.create_conversation(session, "m", preprompt="Be brief.")).id
    found = await store.conversation(conversation, session)
    assert found is not None and found.active_id == found.root_id
    for n in range(2):
        await exchange(store, conversation, n)
    rows = await store.messages(conversation)
    assert [(m.position, m.id, m.role, m.parent_id) for m in rows] == [
        (0, found.root_id, "system", None),
        (1, "u0", "user", found.root_id),
        (2, "a0", "assistant", "u0"),
        (3, "u1", "user", "a0"),
        (4, "a1", "assistant", "u1"),
    ]
    assert rows[0].content == "Be brief."
    # A regenerated answer and an edited question go beside the old ones; nothing is replaced.
    await store.begin_exchange(conversation, "u1", None, "a1-again", limit=10)
    await store.begin_exchange(conversation, "a0", ("u1-edited", "question 1, edited"), "a1-edited")
    rows = await store.messages(conversation)
    assert [(m.id, m.parent_id) for m in rows][5:] == [
        ("a1-again", "u1"),
        ("u1-edited", "a0"),
        ("a1-edited", "u1-edited"),
    ]
    assert [m.position for m in rows] == list(range(8))
    found = await store.conversation(conversation, session)
    assert found is not None and found.active_id == "a1-edited"
    assert await store.set_active(conversation, "a1-again")
    assert not await store.set_active(conversation, "not-a-message")
    found = await store.conversation(conversation, session)
    assert found is not None and found.active_id == "a1-again"


async def test_deleting_a_message_deletes_what_follows_it_and_never_the_root(store: Store) -> None:
    session = await store.new_session()
    conversation = (await store.create_conversation(session, "m")).id
    for n in range(3):
        await exchange(store, conversation, n)
    await store.begin_exchange(conversation, "a0", ("u1-b", "other"), "a1-b")
    root = (await store.messages(conversation))[0].id
    assert await store.delete_message(conversation, root, "a2") == 0
    assert await store.delete_message(conversation, "u1", "a1-b") == 4  # u1, a1, u2, a2
    assert [m.id for m in await store.messages(conversation)][1:] == ["u0", "a0", "u1-b", "a1-b"]
    found = await store.conversation(conversation, session)
    assert found is not None and found.active_id == "a1-b"
    assert await store.delete_message(conversation, "u1", "a0") == 0  # gone already: nothing moves
    found = await store.conversation(conversation, session)
    assert found is not None and found.active_id == "a1-b"


async def test_votes_the_system_prompt_and_the_message_cap(store: Store) -> None:
    session = await store.new_session()
    conversation = (await store.create_conversation(session, "m", preprompt="old")).id
    await exchange(store, conversation, 0)
    assert await store.vote(conversation, "a0", 1)
    assert not await store.vote(conversation, "u0", 1)  # votes are for answers
    await store.set_preprompt(conversation, "new")
    rows = await store.messages(conversation)
    assert (rows[0].content, rows[2].score, rows[1].score) == ("new", 1, 0)
    # 3 messages now; a cap of 4 leaves room for a regenerated answer, not for a new exchange.
    with pytest.raises(TooManyMessages, match="start a new conversation"):
        await store.begin_exchange(conversation, "a0", ("u1", "more"), "a1", limit=4)
    await store.begin_exchange(conversation, "u0", None, "a0-again", limit=4)
    assert len(await store.messages(conversation)) == 4


async def test_the_message_cap_is_exact_under_concurrent_exchanges_on_two_replicas(db: str) -> None:
    """Exchanges sent together to one conversation from two replicas each take positions and a place
    under the cap in turn: none is lost to a count read before the lock was held (a clash on a position
    would come back as MessageIdTaken)."""
    async with opened(db) as one, opened(db) as other:
        session = await one.new_session()
        conversation = (await one.create_conversation(session, "m")).id
        root = (await one.messages(conversation))[0].id
        tries = [
            (one if i % 2 else other).begin_exchange(conversation, root, (f"u{i}", "hi"), f"a{i}", limit=13)
            for i in range(10)
        ]
        results = await asyncio.gather(*tries, return_exceptions=True)
        rows = await other.messages(conversation)
    assert sorted(type(r).__name__ for r in results) == ["NoneType"] * 6 + ["TooManyMessages"] * 4
    assert len(rows) == 13 and [row.position for row in rows] == list(range(13))


async def test_deleting_a_conversation_can_stop_its_generations_on_every_replica(db: str) -> None:
    async with opened(db) as one, opened(db) as other:
        heard: list[tuple[str, str]] = []
        one.on_stop(lambda c, r: heard.append((c, r)))
        other.on_stop(lambda c, r: heard.append((c, r)))
        if isinstance(one, PostgresStore):
            await asyncio.wait_for(one._stops.connected.wait(), 5)
        session = await other.new_session()
        conversation = (await other.create_conversation(session, "m")).id
        await append(other, conversation, "u1", "Hi", "a1")  # an answer being generated
        assert not await other.delete_conversation(conversation, "another session", stop="deleted")
        assert await other.delete_conversation(conversation, session, stop="deleted")
        assert not await other.delete_conversation(conversation, session, stop="deleted")
        # Each replica stops its own (SQLite serves one process: the store that deleted it, alone).
        replicas = 2 if isinstance(one, PostgresStore) else 1
        for _ in range(100):  # the other replica hears it through the database
            if len(heard) >= replicas:
                break
            await asyncio.sleep(0.05)
        # Nothing generating: the replica that deletes stops its own, the others are not woken for nothing.
        finished = (await other.create_conversation(session, "m")).id
        await exchange(other, finished, 1)
        assert await other.delete_conversation(finished, session, stop="deleted")
        await asyncio.sleep(0.5)
    assert heard == [(conversation, "deleted")] * replicas + [(finished, "deleted")]


async def test_only_an_answer_that_ends_its_branch_can_be_continued(store: Store) -> None:
    session = await store.new_session()
    conversation = (await store.create_conversation(session, "m")).id
    await exchange(store, conversation, 0)
    await exchange(store, conversation, 1)
    assert not await store.resume_answer(conversation, "a0")  # a question follows it
    assert await store.resume_answer(conversation, "a1")
    assert not await store.resume_answer(conversation, "a1")  # being generated already


async def test_checkpoints_are_read_while_generating_and_stop_once_finished(db: str) -> None:
    async with opened(db) as writer, opened(db) as reader:
        session = await writer.new_session()
        conversation = (await writer.create_conversation(session, "m")).id
        await append(writer, conversation, "u", "hello", "a")
        await writer.save_partial(conversation, "a", "Hel", 1)
        answer = (await reader.messages(conversation))[2]
        assert (answer.status, answer.content, answer.generated_tokens) == ("generating", "Hel", 1)
        await writer.finish_answer(
            conversation, "a", "Hello!", finish_reason="eos_token", interruption=None, generated_tokens=3
        )
        await writer.save_partial(conversation, "a", "Hel", 1)  # a late checkpoint changes nothing
        answer = (await reader.messages(conversation))[2]
        assert (answer.status, answer.content, answer.finish_reason) == ("done", "Hello!", "eos_token")


async def test_an_interrupted_answer_keeps_its_text_and_reason(store: Store) -> None:
    session = await store.new_session()
    conversation = (await store.create_conversation(session, "m")).id
    await append(store, conversation, "u", "hello", "a")
    await store.finish_answer(
        conversation, "a", "Hel", finish_reason=None, interruption="stop-generating was requested", generated_tokens=1
    )
    answer = (await store.messages(conversation))[2]
    assert (answer.status, answer.content, answer.interruption) == (
        "interrupted",
        "Hel",
        "stop-generating was requested",
    )


async def test_an_answer_left_generating_by_a_dead_server_is_marked_interrupted(db: str) -> None:
    dead = await open_store(db, StoreOptions(lease=0.5))
    session = await dead.new_session()
    conversation = (await dead.create_conversation(session, "m")).id
    await append(dead, conversation, "u", "hello", "a")
    await dead.save_partial(conversation, "a", "saved last", 2)
    if is_postgres(db):
        # Another replica, while the first one is still connected but renews no lease.
        async with opened(db, lease=0.5) as survivor:
            await asyncio.sleep(0.7)
            await survivor.upkeep()
            answer = (await survivor.messages(conversation))[2]
        assert isinstance(dead, PostgresStore)
        await dead.close()
    else:
        await dead.close()  # SQLite serves one process: its next start does the marking
        async with opened(db) as restarted:
            answer = (await restarted.messages(conversation))[2]
    assert (answer.status, answer.content, answer.interruption) == ("interrupted", "saved last", "server stopped")


async def test_a_reused_message_id_or_a_deleted_conversation_is_a_typed_error(store: Store) -> None:
    session = await store.new_session()
    conversation = (await store.create_conversation(session, "m")).id
    for attempt in range(5):
        tries = [append(store, conversation, f"u{attempt}", "hi", f"a{attempt}-{i}") for i in range(2)]
        results = await asyncio.gather(*tries, return_exceptions=True)
        assert sorted(type(r).__name__ for r in results) == ["MessageIdTaken", "NoneType"]
    await store.delete_conversation(conversation, session)
    with pytest.raises(ConversationGone):
        await append(store, conversation, "u-late", "hi", "a-late")
    assert issubclass(MessageIdTaken, Exception)


# Rate limits ------------------------------------------------------------------------------------


async def test_admit_counts_per_bucket_across_stores_and_says_when_to_retry(db: str) -> None:
    async with opened(db) as one, opened(db) as other:
        waits = await asyncio.gather(*[(one if i % 2 else other).admit("messages:s1", 5) for i in range(12)])
        assert sum(1 for wait in waits if wait == 0) == 5
        assert all(0 < wait <= 60 for wait in waits if wait)
        assert await one.admit("messages:s2", 5) == 0  # another bucket is counted apart
        await one.upkeep()  # entries younger than a minute survive the cleanup
        assert await other.admit("messages:s1", 5) > 0


# Migrations -------------------------------------------------------------------------------------


async def test_stores_opening_together_migrate_once(db: str) -> None:
    stores = await asyncio.gather(*[open_store(db) for _ in range(4)])
    try:
        session = await stores[0].new_session()
        assert await stores[3].session(session) is not None
    finally:
        for store in stores:
            await store.close()


async def test_a_database_migrated_by_a_newer_version_is_refused(db: str) -> None:
    async with opened(db):
        pass
    await raw(db, "INSERT INTO _migrations (name, applied_at) VALUES ('999_from_the_future', 'x')")
    with pytest.raises(SchemaTooNew, match=r"999_from_the_future.*upgrade h2ochat"):
        await open_store(db)


async def test_sqlite_databases_of_the_first_schema_are_migrated_with_their_sessions(tmp_path: Any) -> None:
    from h2ochat.server.storage.sqlite_schema import MIGRATIONS

    path = str(tmp_path / "old.db")
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    MIGRATIONS[0][1](connection, {})
    connection.execute("INSERT INTO _migrations VALUES ('001_create_tables', 'then')")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    connection.execute(
        "INSERT INTO conversations (id, session_id, model, created_at, updated_at) VALUES ('c1', 'legacy', 'm', ?, ?)",
        (stamp, stamp),
    )
    connection.commit()
    connection.close()
    async with opened(path) as store:
        assert await store.session("legacy") is not None  # its conversations stay reachable, and can expire
        assert [c.id for c in await store.conversations("legacy")] == ["c1"]


async def test_an_answer_keeps_how_many_earlier_messages_were_left_out(db: str) -> None:
    async with opened(db) as store:
        session = await store.new_session()
        conversation = (await store.create_conversation(session, "m", 10)).id
        await exchange(store, conversation, 1)
        await append(store, conversation, "u2", "question 2", "a2", left_out=2)
        rows = await store.messages(conversation)
    assert [(m.id, m.left_out) for m in rows][1:] == [("u1", 0), ("a1", 0), ("u2", 0), ("a2", 2)]


async def test_answers_stored_before_left_out_existed_read_as_none_left_out(db: str) -> None:
    async with opened(db) as store:
        session = await store.new_session()
        conversation = (await store.create_conversation(session, "m", 10)).id
        await exchange(store, conversation, 1)
    # The database as the release before it was: without the column and without its migration.
    await raw(db, "ALTER TABLE messages DROP COLUMN left_out")
    migration = "003_answers_left_out" if not is_postgres(db) else "002_answers_left_out"
    await raw(db, f"DELETE FROM _migrations WHERE name = '{migration}'")
    async with opened(db) as store:
        assert [m.left_out for m in await store.messages(conversation)] == [0, 0, 0]
