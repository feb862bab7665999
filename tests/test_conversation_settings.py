"""Per-conversation settings (issue 26): stored on both databases, set with PATCH, refused clearly when wrong.

The storage tests run on SQLite and on a throwaway PostgreSQL (tests/pgcluster.py); the endpoint's over
real loopback HTTP against the server with the fixed backend.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from h2ochat.server import RunningServer, start_server
from h2ochat.server.storage import Store, is_postgres, open_store
from tests.helpers import RawClient, fixed_config

Client = Callable[[str], RawClient]


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


# Storage -------------------------------------------------------------------------------------------------


async def test_settings_are_stored_with_the_conversation_and_read_by_every_read(store: Store) -> None:
    mine, theirs = await store.new_session(), await store.new_session()
    conversation = (await store.create_conversation(mine, "m")).id
    other = (await store.create_conversation(mine, "m")).id
    assert (await store.conversation(conversation, mine)).settings == {}  # type: ignore[union-attr]
    assert await store.save_conversation_settings(conversation, mine, {"temperature": 0.3, "max_new_tokens": 50})
    assert not await store.save_conversation_settings(conversation, theirs, {"temperature": 2.0})
    read = await store.conversation(conversation, mine)
    assert read is not None and read.settings == {"temperature": 0.3, "max_new_tokens": 50}
    listed = {c.id: c.settings for c in await store.conversations(mine)}
    assert listed == {conversation: {"temperature": 0.3, "max_new_tokens": 50}, other: {}}
    await store.rename_conversation(conversation, mine, "Found")
    assert [c.settings for c in await store.search_conversations(mine, "Found")] == [read.settings]
    assert await store.save_conversation_settings(conversation, mine, {})  # back to the model's defaults
    assert (await store.conversation(conversation, mine)).settings == {}  # type: ignore[union-attr]


async def test_conversations_stored_before_settings_existed_read_as_none_set(db: str) -> None:
    store = await open_store(db)
    session = await store.new_session()
    conversation = (await store.create_conversation(session, "m")).id
    await store.close()
    # The database as the release before it was: without the column and without its migration.
    await raw(db, "ALTER TABLE conversations DROP COLUMN settings")
    migration = "004_conversation_settings" if is_postgres(db) else "005_conversation_settings"
    await raw(db, f"DELETE FROM _migrations WHERE name = '{migration}'")
    store = await open_store(db)
    try:
        read = await store.conversation(conversation, session)
        assert read is not None and read.settings == {}
        assert await store.save_conversation_settings(conversation, session, {"max_new_tokens": 7})
        assert (await store.conversation(conversation, session)).settings == {"max_new_tokens": 7}  # type: ignore[union-attr]
    finally:
        await store.close()


# The endpoint -----------------------------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with start_server(fixed_config(text="Hello.")) as running:
        yield running


async def test_patch_stores_settings_that_the_reads_return(server: RunningServer, raw_client: Client) -> None:
    client = raw_client(server.url)
    await client.accept()
    conversation = await client.create()
    path = f"/conversation/{conversation}"
    assert (await client.request("GET", f"/api/{path[1:]}"))[1]["settings"] == {}
    status, body, _ = await client.request(
        "PATCH", path, json={"settings": {"temperature": 0.7, "max_new_tokens": 256}}
    )
    assert status == 200 and set(body) == {"activeMessageId"}
    assert (await client.request("GET", f"/api/{path[1:]}"))[1]["settings"] == {
        "temperature": 0.7,
        "max_new_tokens": 256,
    }
    assert (await client.request("GET", "/api/conversations"))[1][0]["settings"]["max_new_tokens"] == 256
    # null is the model's default: left out; a title and settings together are one update.
    body = {"title": "Tuned", "settings": {"temperature": None, "max_new_tokens": 64}}
    assert (await client.request("PATCH", path, json=body))[0] == 200
    read = (await client.request("GET", f"/api/{path[1:]}"))[1]
    assert (read["title"], read["settings"]) == ("Tuned", {"max_new_tokens": 64})
    stranger = raw_client(server.url)
    await stranger.accept()
    assert (await stranger.request("PATCH", path, json={"settings": {}}))[0] == 404


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, 'Send any of {"title": "<text>", "settings": {"temperature": 0.7'),
        ({"settings": [0.7]}, "settings must be an object such as"),
        (
            {"settings": {"top_k": 5, "seed": 1}},
            "settings holds temperature and max_new_tokens only, not 'seed', 'top_k'",
        ),
        ({"settings": {"temperature": 0}}, "Expected `float` > 0.0 - at `settings.temperature`"),
        ({"settings": {"temperature": "hot"}}, "Expected `float | null`, got `str` - at `settings.temperature`"),
        ({"settings": {"max_new_tokens": 2.5}}, "at `settings.max_new_tokens`"),
        ({"settings": {"max_new_tokens": 10**9}}, "settings.max_new_tokens is 1000000000, over this server's limit"),
        ({"title": "Kept", "settings": {"max_new_tokens": 0}}, "at `settings.max_new_tokens`"),
        ({"colour": "red"}, "unknown field `colour`"),
    ],
)
async def test_patch_refuses_bad_settings_and_stores_nothing(
    body: dict[str, Any], says: str, server: RunningServer, raw_client: Client
) -> None:
    client = raw_client(server.url)
    await client.accept()
    conversation = await client.create()
    status, answer, _ = await client.request("PATCH", f"/conversation/{conversation}", json=body)
    assert status == 400 and says in answer["message"], answer
    read = (await client.request("GET", f"/api/conversation/{conversation}"))[1]
    assert (read["title"], read["settings"]) == ("New Chat", {})
