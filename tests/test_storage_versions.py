"""The storage on every Python the project supports (issue 16).

Two findings that only some interpreters report:

- Python 3.13 warns (``ResourceWarning: unclosed database``) when a
  ``sqlite3.Connection`` is left to the garbage collector instead of being
  closed. The warning surfaces wherever the collector happens to run, so these
  tests provoke the leak paths and collect right away, to name the culprit.
- Python 3.12.0 to 3.12.3 warn (``DeprecationWarning``) for numbered
  placeholders (``?1``) bound to a sequence of values; the server turned that
  into a 500 under warnings-as-errors.

On the other versions the warnings do not exist, and these tests check the
same paths for what they do show there (threads, results).
"""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from h2ochat.server import ConfigError, ModelConfig, ServerConfig, start_server, storage
from h2ochat.server.config import TgiEndpoint
from tests.helpers import append


async def _open_store(path: str) -> Any:
    # Store.open here; open_store(db) once storage is an interface (the lead's rewrite): drop this then.
    opener = getattr(storage, "open_store", None)
    return await (opener(path) if opener is not None else storage.Store.open(path))


def _unclosed_databases(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning) and "unclosed database" in str(w.message)
    ]


def _failing_config(db: str) -> ServerConfig:
    # A tgi endpoint needs chat-ui tokens: the models' start refuses the
    # configuration, after the database has been opened.
    return ServerConfig(
        port=0, db=db, models=[ModelConfig(name="down", endpoints=[TgiEndpoint(url="http://127.0.0.1:9")])]
    )


async def _start_and_fail(config: ServerConfig) -> None:
    with pytest.raises(ConfigError, match="user_message_token"):
        async with start_server(config):
            pass


async def _threads_settle(before: set[threading.Thread]) -> set[str]:
    """The names of threads started since ``before`` that are still alive after up to 2 s."""
    for _ in range(40):
        extra = {t.name for t in threading.enumerate() if t not in before and t.is_alive()}
        if not extra:
            break
        await asyncio.sleep(0.05)
    return extra


async def _collect() -> None:
    """Collect garbage while the failed call's last references go away: its exception is
    held a moment longer by the executor thread that raised it. A connection nobody closed
    is finalised here, with its warning (3.13 and later)."""
    for _ in range(10):
        await asyncio.sleep(0.02)
        gc.collect()


async def test_a_server_that_fails_to_start_closes_its_database(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await _start_and_fail(_failing_config(str(tmp_path / "chat.db")))
        await _collect()
    assert _unclosed_databases(caught) == []
    assert await _threads_settle(before) == set()


async def test_a_database_that_cannot_be_opened_leaves_nothing_open(tmp_path: Path) -> None:
    path = tmp_path / "not-a-database.db"
    path.write_bytes(b"this is not an SQLite file" * 100)  # connect() succeeds, the first statement fails
    before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Exception, match="not a database"):
            await _open_store(str(path))
        await _collect()
    assert _unclosed_databases(caught) == []
    assert await _threads_settle(before) == set()


async def test_every_store_call_of_the_server_runs_without_a_warning(tmp_path: Path) -> None:
    # Warnings are errors here even when pytest is run with other -W options:
    # the 3.12.0-3.12.3 DeprecationWarning for "?1" placeholders fails this test there.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = await _open_store(str(tmp_path / "chat.db"))
        try:
            await _exercise(store)
        finally:
            await store.close()
        await _collect()


async def _exercise(store: Any) -> None:
    await store.save_settings("s1", "model-a", share=True, accepted=True)
    first = await store.session("s1")
    assert first is not None and first.active_model == "model-a" and first.share_conversations
    assert first.ethics_accepted_at is not None
    # The second save (the upsert's update branch): no model keeps the old one, the first acceptance stays.
    await store.save_settings("s1", None, share=False, accepted=True)
    assert await store.session("s1") == type(first)("s1", "model-a", False, first.ethics_accepted_at)
    assert await store.session("nobody") is None

    conversation = (await store.create_conversation("s1", "model-a")).id
    assert (await store.conversation(conversation, "s1")) is not None
    assert (await store.conversation(conversation, "s2")) is None
    assert await store.rename_conversation(conversation, "s1", "Capitals")
    assert [c.title for c in await store.conversations("s1")] == ["Capitals"]

    await append(store, conversation, "u1", "Capital of France?", "a1")
    await store.save_partial(conversation, "a1", "Par", 1)
    await store.finish_answer(
        conversation, "a1", "Paris.", finish_reason="eos_token", interruption=None, generated_tokens=2
    )
    root = (await store.messages(conversation))[0].id
    await store.begin_exchange(conversation, root, ("u2", "Capital of Italy?"), "a2")  # an edit, beside u1
    await store.finish_answer(conversation, "a2", "Ro", finish_reason=None, interruption="stopped", generated_tokens=1)
    rows = await store.messages(conversation)
    assert [(r.position, r.role, r.content, r.status) for r in rows][3:] == [
        (3, "user", "Capital of Italy?", "done"),
        (4, "assistant", "Ro", "interrupted"),
    ]
    assert await store.delete_conversation(conversation, "s1")
    assert await store.conversations("s1") == []
