"""The migration to conversation trees, on databases written by the release before it (issue 20).

The fixtures were written by commit f0df97b with tests/fixtures/write_release_db.py: a SQLite file
and a ``pg_dump --inserts`` of a PostgreSQL database. Each list must become a branch under a system
root holding its model's preprompt, with every message, status and text kept.
"""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from h2ochat.server.storage import Store, StoreOptions, is_postgres, open_store
from tests.helpers import append

FIXTURES = Path(__file__).parent / "fixtures"
PREPROMPTS = {"smollm2": "You are a helpful assistant."}


@pytest.fixture(params=["sqlite", "postgres"])
async def released(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database as the release left it."""
    if request.param == "sqlite":
        path = tmp_path / "release.sqlite"
        shutil.copy(FIXTURES / "release-f0df97b.sqlite", path)
        return str(path)
    url: str = request.getfixturevalue("postgres_url")
    connection = await asyncpg.connect(url)
    try:
        await connection.execute((FIXTURES / "release-f0df97b.pg.sql").read_text())
    finally:
        await connection.close()
    return url


async def _owner(db: str, title: str) -> str:
    sql = f"SELECT session_id FROM conversations WHERE title = '{title}'"
    if is_postgres(db):
        connection = await asyncpg.connect(db)
        try:
            value: str = await connection.fetchval(sql)
            return value
        finally:
            await connection.close()
    with sqlite3.connect(db) as connection:
        (value,) = connection.execute(sql).fetchone()
    connection.close()
    return str(value)


async def test_every_list_becomes_a_branch_under_its_models_preprompt(released: str) -> None:
    alice = await _owner(released, "Capitals")
    store = await open_store(released, StoreOptions(preprompts=PREPROMPTS))
    try:
        conversations = {c.title if c.title != "New Chat" else c.model: c for c in await store.conversations(alice)}
        assert set(conversations) == {"Capitals", "smollm2", "gone-model"}
        chat = conversations["Capitals"]
        rows = await store.messages(chat.id)
        root = rows[0]
        assert uuid.UUID(root.id) and chat.root_id == root.id
        assert [(m.position, m.role, m.content, m.parent_id) for m in rows] == [
            (0, "system", "You are a helpful assistant.", None),
            (1, "user", "Capital of France?", root.id),
            (2, "assistant", "Paris.", "u0"),
            (3, "user", "And Italy?", "a0"),
            (4, "assistant", "Rome.", "u1"),
        ]
        assert chat.active_id == "a1" and [m.score for m in rows] == [0] * 5
        cut = (await store.messages(conversations["smollm2"].id))[-1]
        assert (cut.content, cut.status, cut.interruption) == ("Once upon", "interrupted", "client disconnected")
        empty = conversations["gone-model"]
        assert [(m.role, m.content) for m in await store.messages(empty.id)] == [("system", "")]
        assert empty.active_id == empty.root_id
        await _goes_on(store, alice, chat.id)
    finally:
        await store.close()


async def _goes_on(store: Store, session: str, conversation: str) -> None:
    """The migrated conversation takes new exchanges, is found by search, and can be deleted."""
    await append(store, conversation, "u2", "And Spain?", "a2")
    rows = await store.messages(conversation)
    assert [(m.position, m.parent_id) for m in rows[-2:]] == [(5, "a1"), (6, "u2")]
    assert [c.title for c in await store.search_conversations(session, "italy")] == ["Capitals"]
    assert await store.delete_conversation(conversation, session)
    assert await store.messages(conversation) == []


def test_the_fixtures_were_written_before_trees(tmp_path: Any) -> None:
    """A guard on the fixture itself: it must hold the release's schema, or the test above proves nothing."""
    with sqlite3.connect(FIXTURES / "release-f0df97b.sqlite") as connection:
        names = {name for (name,) in connection.execute("SELECT name FROM _migrations")}
        columns = {row[1] for row in connection.execute("PRAGMA table_info(messages)")}
    connection.close()
    assert "005_conversation_settings" in names and not any("tree" in name for name in names)
    assert "parent_id" not in columns
    assert "005_conversation_trees" not in (FIXTURES / "release-f0df97b.pg.sql").read_text()
