"""Devices in the store (issue 23), on SQLite and on PostgreSQL alike (the fixtures of tests/test_storage.py)."""

from __future__ import annotations

from h2ochat.server.storage import Store
from h2ochat.server.storage.devices import CODE, DEVICE_SECRET, FIRST_DEVICE, new_code, new_secret, normal_code
from tests.pgfixtures import opened


async def linked(store: Store, session: str, label: str = "Firefox on Linux") -> tuple[str, str]:
    """A device linked to ``session`` through a fresh code: (its secret, its id)."""
    code, secret = new_code(), new_secret()
    await store.device_code(session, code, 600)
    assert await store.link_device(code, secret, label) == session
    found = await store.device_session(secret)
    assert found is not None
    return secret, found[1]


def test_codes_and_secrets_have_their_forms() -> None:
    code = new_code()
    assert CODE.fullmatch(code) and DEVICE_SECRET.fullmatch(new_secret())
    assert normal_code(f" {code[:4].lower()}-{code[4:]} ") == code
    for bad in (
        "",
        "ABCD-EFG",
        "ABCD-EFGHI",
        "0000-0000",
        "ABCD EFG!",
        "\uff21\uff22\uff23\uff24-\uff25\uff26\uff27\uff28",
    ):
        assert normal_code(bad) is None, bad


async def test_a_code_attaches_a_device_to_the_session_once(store: Store) -> None:
    session = await store.new_session()
    code = new_code()
    expires = await store.device_code(session, code, 600)
    assert expires > (await store.devices(session))[0].created_at
    secret = new_secret()
    assert await store.link_device(code, secret, "Chrome on Linux") == session
    found = await store.device_session(secret)
    assert found is not None and found[0].id == session
    assert await store.link_device(code, new_secret(), "again") is None  # spent
    devices = await store.devices(session)
    assert [(d.id, d.label) for d in devices] == [(FIRST_DEVICE, ""), (found[1], "Chrome on Linux")]


async def test_unknown_expired_and_replaced_codes_link_nothing(store: Store) -> None:
    session = await store.new_session()
    assert await store.link_device(new_code(), new_secret(), "x") is None
    old = new_code()
    await store.device_code(session, old, -1)  # already past
    assert await store.link_device(old, new_secret(), "x") is None
    first, second = new_code(), new_code()
    await store.device_code(session, first, 600)
    await store.device_code(session, second, 600)  # one live code per session: the first is gone
    assert await store.link_device(first, new_secret(), "x") is None
    assert await store.link_device(second, new_secret(), "x") == session
    assert await store.device_session(new_secret()) is None  # never issued
    assert [d.id for d in await store.devices(session)][:1] == [FIRST_DEVICE]
    assert len(await store.devices(session)) == 2


async def test_a_detached_device_no_longer_resolves_on_any_replica(store: Store, db: str) -> None:
    session = await store.new_session()
    secret, device_id = await linked(store, session)
    async with opened(db) as other:  # a second replica (or process) on the same database
        assert await other.device_session(secret) is not None
        assert not await other.detach_device(await store.new_session(), device_id)  # not that session's
        assert await other.detach_device(session, device_id)
        assert await store.device_session(secret) is None
        assert await other.device_session(secret) is None
        assert not await other.detach_device(session, device_id)
    assert [d.id for d in await store.devices(session)] == [FIRST_DEVICE]


async def test_devices_follow_a_renewed_session(store: Store) -> None:
    session = await store.new_session()
    secret, _ = await linked(store, session)
    code = new_code()
    await store.device_code(session, code, 600)
    fresh = await store.renew_session(session)  # the welcome gate's renewal, or detaching the first device
    assert await store.session(session) is None
    found = await store.device_session(secret)
    assert found is not None and found[0].id == fresh
    assert await store.link_device(code, new_secret(), "y") == fresh
    assert len(await store.devices(fresh)) == 3 and await store.devices(session) == []


async def test_the_upkeep_forgets_expired_codes(store: Store) -> None:
    session = await store.new_session()
    code = new_code()
    await store.device_code(session, code, -1)
    await store.upkeep()
    await store.device_code(session, new_code(), 600)  # still one row per session after the upkeep
    assert await store.link_device(code, new_secret(), "x") is None
