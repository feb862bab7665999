"""Shared links in the store (issue 23), on SQLite and on PostgreSQL alike (the fixtures of tests/test_storage.py)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3

import asyncpg
import pytest

from h2ochat.protocol.tree import Tree
from h2ochat.server.storage import Store, TooManyConversations, is_postgres
from h2ochat.server.storage.shares import Snapshot, TooManyShares
from tests.pgfixtures import opened
from tests.test_storage import exchange, raw

URL_SAFE_22 = re.compile(r"[A-Za-z0-9_-]{22}")


async def snapshot(store: Store, session: str, conversation: str, days: int | None = None) -> Snapshot:
    """The conversation's active branch, as the share route takes it."""
    found = await store.conversation_with_messages(conversation, session)
    assert found is not None
    meta, rows = found
    by_id = {row.id: row for row in rows}
    branch = [by_id[i] for i in Tree(rows).path(meta.active_id)]
    return Snapshot(meta.id, meta.title, meta.model, branch, days)


async def chat(store: Store, turns: int = 2) -> tuple[str, str]:
    """A session with a conversation of ``turns`` finished exchanges: (session, conversation)."""
    session = await store.new_session()
    conversation = (await store.create_conversation(session, "m", preprompt="Be brief.")).id
    for n in range(turns):
        await exchange(store, conversation, n, answer=f"answer {n}")
    await store.rename_conversation(conversation, session, "Trip to Lyon")
    return session, conversation


async def test_a_share_is_a_snapshot_of_the_branch_under_fresh_ids(store: Store) -> None:
    session, conversation = await chat(store)
    share_id = await store.share(session, await snapshot(store, session, conversation))
    assert URL_SAFE_22.fullmatch(share_id)  # 128 random bits
    found = await store.shared(share_id)
    assert found is not None
    share, messages = found
    assert (share.title, share.model, share.conversation_id, share.expires_at) == (
        "Trip to Lyon",
        "m",
        conversation,
        None,
    )
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "question 0"),
        ("assistant", "answer 0"),
        ("user", "question 1"),
        ("assistant", "answer 1"),
    ]
    owners = {row.id for row in await store.messages(conversation)}
    assert not owners & {m.id for m in messages}  # nothing names the owner's messages
    assert [m.parent_id for m in messages] == [None, *(m.id for m in messages[:-1])]
    assert (share.root_id, share.leaf_id) == (messages[0].id, messages[-1].id)

    # Later messages, a new title, even deleting the conversation: the share stays as it was.
    await exchange(store, conversation, 2)
    await store.rename_conversation(conversation, session, "Renamed")
    assert await store.delete_conversation(conversation, session)
    again = await store.shared(share_id)
    assert again is not None and again[0].title == "Trip to Lyon" and len(again[1]) == 5
    assert [s.id for s in await store.shares(session)] == [share_id]


async def test_sharing_an_unchanged_conversation_again_gives_the_same_id(store: Store) -> None:
    session, conversation = await chat(store)
    first = await store.share(session, await snapshot(store, session, conversation))
    assert await store.share(session, await snapshot(store, session, conversation)) == first
    week = await store.share(session, await snapshot(store, session, conversation, days=7))
    assert week != first  # another expiry is another link
    await exchange(store, conversation, 5)
    changed = await store.share(session, await snapshot(store, session, conversation))
    assert changed not in (first, week)
    assert len({s.id for s in await store.shares(session)}) == 3
    # Revoked, the snapshot gets a new link: the old one stays dead.
    assert await store.revoke_share(changed, session)
    renewed = await store.share(session, await snapshot(store, session, conversation))
    assert renewed != changed and await store.shared(changed) is None


async def test_revoked_expired_and_unknown_ids_all_read_as_none(db: str) -> None:
    async with opened(db) as store:
        session, conversation = await chat(store)
        stranger = await store.new_session()
        revoked = await store.share(session, await snapshot(store, session, conversation))
        await exchange(store, conversation, 3)
        expiring = await store.share(session, await snapshot(store, session, conversation, days=30))
        found = await store.shared(expiring)
        assert found is not None and found[0].expires_at is not None
        assert found[0].expires_at > found[0].created_at  # thirty days on
        assert not await store.revoke_share(revoked, stranger)  # only its owner revokes it
        assert await store.revoke_share(revoked, session)
        assert not await store.revoke_share(revoked, session)
        await raw(db, f"UPDATE shares SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = '{expiring}'")
        for gone in (revoked, expiring, "A" * 22):
            assert await store.shared(gone) is None
        assert await store.shares(session) == []
        assert not await store.revoke_share(expiring, session)
        await store.upkeep()  # expired rows are deleted, with their messages
        assert await count(db, "SELECT count(*) FROM shares") == 0
        assert await count(db, "SELECT count(*) FROM share_messages") == 0


async def count(db: str, sql: str) -> int:
    """One number read straight from the database, past the store."""
    if is_postgres(db):
        connection = await asyncpg.connect(db)
        try:
            return int(await connection.fetchval(sql))
        finally:
            await connection.close()
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return int(connection.execute(sql).fetchone()[0])


async def test_a_session_holds_at_most_limit_live_shares(store: Store) -> None:
    session, conversation = await chat(store, turns=1)
    await store.share(session, await snapshot(store, session, conversation), limit=2)
    await exchange(store, conversation, 1)
    await store.share(session, await snapshot(store, session, conversation), limit=2)
    await exchange(store, conversation, 2)
    with pytest.raises(TooManyShares, match=r"already has 2 shared links.*revoke some"):
        await store.share(session, await snapshot(store, session, conversation), limit=2)
    # The same snapshot again is no new share: it is given back even at the limit.
    await store.rename_conversation(conversation, session, "Trip to Lyon")
    listed = await store.shares(session)
    await store.revoke_share(listed[0].id, session)
    await store.share(session, await snapshot(store, session, conversation), limit=2)


async def test_continuing_a_share_copies_it_into_the_readers_session(store: Store) -> None:
    owner, conversation = await chat(store)
    share_id = await store.share(owner, await snapshot(store, owner, conversation))
    reader = await store.new_session()
    copy = await store.continue_share(share_id, reader, "other-model")
    assert copy is not None and copy != conversation
    found = await store.conversation_with_messages(copy, reader)
    assert found is not None
    meta, rows = found
    assert (meta.title, meta.model) == ("Trip to Lyon", "other-model")
    shared = await store.shared(share_id)
    assert shared is not None
    assert [(r.id, r.parent_id, r.role, r.content) for r in rows] == [
        (m.id, m.parent_id, m.role, m.content) for m in shared[1]
    ]
    assert (meta.root_id, meta.active_id) == (shared[0].root_id, shared[0].leaf_id)
    # The copy is the reader's own: it grows like any conversation, and the share does not.
    await exchange(store, copy, 9)
    assert len(await store.messages(copy)) == 7
    assert len((await store.shared(share_id) or (None, []))[1]) == 5
    assert await store.conversation(copy, owner) is None
    # Twice is two copies; an unknown or revoked share copies nothing; the reader's cap holds.
    assert await store.continue_share(share_id, reader, "m") not in (None, copy)
    assert await store.continue_share("B" * 22, reader, "m") is None
    with pytest.raises(TooManyConversations):
        await store.continue_share(share_id, reader, "m", limit=2)
    await store.revoke_share(share_id, owner)
    assert await store.continue_share(share_id, reader, "m") is None
    assert len(await store.conversations(reader)) == 2


async def test_shares_follow_the_session_to_its_fresh_id_and_end_with_it(db: str) -> None:
    async with opened(db, session_idle=3.0) as store:
        session, conversation = await chat(store, turns=1)
        share_id = await store.share(session, await snapshot(store, session, conversation))
        fresh = await store.renew_session(session)  # the welcome gate's step
        assert [s.id for s in await store.shares(fresh)] == [share_id]
        assert await store.revoke_share(share_id, session) is False
        await asyncio.sleep(3.1)
        await store.upkeep()  # the session expired: nobody could revoke its links any more
        assert await store.shared(share_id) is None


async def test_two_replicas_sharing_one_snapshot_at_once_make_one_share(db: str) -> None:
    async with opened(db) as a, opened(db) as b:
        session, conversation = await chat(a)
        taken = await snapshot(a, session, conversation)
        ids = await asyncio.gather(*(store.share(session, taken) for store in (a, b, a, b)))
        assert len(set(ids)) == 1
        assert len(await b.shares(session)) == 1
