"""People in the store (issue 24), on SQLite and on PostgreSQL alike (the fixtures of tests/pgfixtures.py)."""

from __future__ import annotations

import asyncio

from h2ochat.server.storage import Store
from h2ochat.server.storage.devices import digest
from h2ochat.server.storage.people import API_KEY, Login, new_api_key
from h2ochat.server.storage.usage import day
from tests.pgfixtures import opened


async def test_a_person_is_one_session_whoever_asks(store: Store) -> None:
    person, session = await store.person_session("alice@example.com", "Alice")
    assert (person.login, person.name, person.session_id) == ("alice@example.com", "Alice", session.id)
    assert session.ethics_accepted_at is None  # the welcome gate holds for people as for anyone
    again, same = await store.person_session("alice@example.com", "")  # no name header: the stored one stays
    assert (again.id, again.name, same.id) == (person.id, "Alice", session.id)
    renamed, _ = await store.person_session("alice@example.com", "Alice Liddell")
    assert renamed.name == "Alice Liddell"
    assert (await store.person_session("alice@example.com", ""))[0].name == "Alice Liddell"
    other, theirs = await store.person_session("bob", "")
    assert other.id != person.id and theirs.id != session.id
    assert await store.session(session.id) is not None


async def test_a_person_first_seen_by_many_requests_at_once_is_made_once(store: Store) -> None:
    found = await asyncio.gather(*(store.person_session("carol@example.com", "Carol") for _ in range(8)))
    assert len({person.id for person, _ in found}) == 1
    assert len({session.id for _, session in found}) == 1


async def test_a_persons_history_outlives_the_idle_time(db: str) -> None:
    async with opened(db, session_idle=2.0) as store:
        _, session = await store.person_session("dave@example.com", "")
        conversation = (await store.create_conversation(session.id, "m")).id
        await store.rename_conversation(conversation, session.id, "kept")  # not an orphan
        anonymous = await store.new_session()
        await asyncio.sleep(2.2)
        await store.upkeep()
        assert await store.session(anonymous) is None
        assert await store.session(session.id) is not None
        assert await store.conversation(conversation, session.id) is not None
        _, again = await store.person_session("dave@example.com", "")
        assert again.id == session.id


async def test_a_renewed_session_stays_the_persons(store: Store) -> None:
    person, session = await store.person_session("erin@example.com", "")
    conversation = (await store.create_conversation(session.id, "m")).id
    fresh = await store.renew_session(session.id)
    moved, found = await store.person_session("erin@example.com", "")
    assert (moved.id, found.id, moved.session_id) == (person.id, fresh, fresh)
    assert await store.conversation(conversation, fresh) is not None


async def test_a_key_opens_its_person_until_revoked(store: Store) -> None:
    secret, other = new_api_key(), new_api_key()
    assert API_KEY.fullmatch(secret) and secret != other
    key = await store.create_api_key("grace@example.com", "laptop", digest(secret))  # a person never seen: made
    await store.create_api_key("heidi@example.com", "desktop", digest(other))
    found = await store.api_key_person(digest(secret))
    assert found is not None
    person, session, key_id = found
    assert (person.login, key_id) == ("grace@example.com", key.id)
    assert session.id == (await store.person_session("grace@example.com", ""))[1].id  # the same history
    listed = await store.api_keys("grace@example.com")
    assert [(k.id, k.name, k.revoked_at) for k in listed] == [(key.id, "laptop", None)]
    assert listed[0].last_used_at is not None  # the use above
    assert await store.revoke_api_key("heidi@example.com", key.id) is False  # not theirs to revoke
    assert await store.revoke_api_key("grace@example.com", key.id) is True
    assert await store.revoke_api_key("grace@example.com", key.id) is False  # already
    assert await store.api_key_person(digest(secret)) is None
    assert (await store.api_keys("grace@example.com"))[0].revoked_at is not None
    assert await store.api_key_person(digest(new_api_key())) is None  # never issued: the same answer
    assert await store.api_keys("nobody@example.com") == []


async def test_use_is_counted_per_day_and_listed_per_person(db: str) -> None:
    async with opened(db, session_idle=2.0) as store:
        _, alice = await store.person_session("alice@example.com", "Alice")
        _, bob = await store.person_session("bob@example.com", "")
        anonymous = await store.new_session()
        await store.create_conversation(alice.id, "m")
        for session, tokens in ((alice.id, 5), (alice.id, 7), (bob.id, 3), (anonymous, 100)):
            await store.record_usage(session, 1, tokens)
        assert await store.tokens_today(alice.id) == 12 and await store.tokens_today(anonymous) == 100
        listed = await store.usage(day())
        assert [(p.login, p.name, p.messages, p.tokens, p.conversations) for p in listed] == [
            ("alice@example.com", "Alice", 2, 12, 1),
            ("bob@example.com", "", 1, 3, 0),
        ]  # people only, the busiest first
        assert [p.tokens for p in await store.usage(day(-1))] == [0, 0]  # from tomorrow on: nothing yet
        fresh = await store.renew_session(alice.id)
        assert await store.tokens_today(fresh) == 12  # the use follows the session
        await asyncio.sleep(2.2)
        await store.upkeep()
        assert await store.tokens_today(anonymous) == 0  # gone with its idle session
        assert await store.tokens_today(bob.id) == 3  # a person's stays


async def test_a_sign_in_is_taken_once_and_a_merge_moves_a_browsers_history(store: Store) -> None:
    await store.begin_login("state-1", Login("n", "v", "/next", ""), 600)
    await store.begin_login("state-2", Login("n", "v", "/", ""), -1)  # already expired
    assert await store.take_login("state-1") == Login("n", "v", "/next", "")
    assert await store.take_login("state-1") is None  # once
    assert await store.take_login("state-2") is None
    assert await store.take_login("never") is None
    anonymous = await store.new_session()
    await store.save_settings(anonymous, None, True, True)
    conversation = (await store.create_conversation(anonymous, "m")).id
    person, session = await store.person_session("ivan@example.com", "")
    assert await store.session_person(session.id) == person and await store.session_person(anonymous) is None
    await store.merge_session(anonymous, session.id)
    assert await store.conversation(conversation, session.id) is not None
    assert await store.conversation(conversation, anonymous) is None
    moved = await store.session(session.id)
    assert moved is not None and moved.ethics_accepted_at is not None  # the welcome modal stays accepted
