"""Export reads and imports in the store (issue 23), on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import pytest

from h2ochat.protocol.export import ExportConversation, ExportMessage
from h2ochat.server.chatui.archive import to_export
from h2ochat.server.storage import SessionGone, Store, TooManyConversations
from tests.test_storage import exchange

T0, T1 = "2026-01-02T03:04:05.678Z", "2026-01-02T03:05:00.000Z"


def conversation(title: str = "Lyon", status: str = "done") -> ExportConversation:
    root, question, answer = (f"6b1f3c2a-0000-4000-8000-00000000000{n}" for n in range(3))
    messages = [
        ExportMessage(root, None, "system", "Be brief.", T0, T0),
        ExportMessage(question, root, "user", "Hi", T0, T0),
        ExportMessage(answer, question, "assistant", "Hello", T0, T1, status, "stop", None, 3, 0, -1),  # type: ignore[arg-type]
    ]
    return ExportConversation("src", title, "m", T0, T1, answer, messages, {"temperature": 0.2})


async def test_an_import_is_read_back_as_it_was_written(store: Store) -> None:
    session = await store.new_session()
    imported = await store.import_conversations(session, [("k1", conversation())])
    assert imported.skipped == 0 and len(imported.conversations) == 1
    (new_id,) = imported.conversations
    assert new_id != "src" and len(new_id) == 24
    exported = to_export(await store.export_conversations(session)).conversations
    assert len(exported) == 1
    again = exported[0]
    assert again.id == new_id
    source = conversation()
    assert (again.title, again.model, again.created_at, again.updated_at, again.active_id, again.settings) == (
        source.title,
        source.model,
        source.created_at,
        source.updated_at,
        source.active_id,
        source.settings,
    )
    assert again.messages == source.messages  # ids, parents, dates, score, tokens: all kept


async def test_a_second_import_skips_what_is_there_and_a_deleted_one_comes_back(store: Store) -> None:
    session, other = await store.new_session(), await store.new_session()
    first = await store.import_conversations(session, [("k1", conversation()), ("k1", conversation())])
    assert (len(first.conversations), first.skipped) == (1, 1)  # twice in one file: once
    second = await store.import_conversations(session, [("k1", conversation()), ("k2", conversation("Paris"))])
    assert (len(second.conversations), second.skipped) == (1, 1)
    assert len(await store.conversations(session)) == 2
    elsewhere = await store.import_conversations(other, [("k1", conversation())])  # another session's own copy
    assert len(elsewhere.conversations) == 1
    assert await store.delete_conversation(first.conversations[0], session)
    third = await store.import_conversations(session, [("k1", conversation())])
    assert (len(third.conversations), third.skipped) == (1, 0)


async def test_an_answer_exported_while_written_arrives_interrupted(store: Store) -> None:
    session = await store.new_session()
    await store.import_conversations(session, [("k", conversation(status="generating"))])
    ((_, messages),) = await store.export_conversations(session)
    assert (messages[-1].status, messages[-1].interruption) == (
        "interrupted",
        "The answer was still being written when it was exported",
    )


async def test_past_the_limit_or_without_a_session_nothing_is_written(store: Store) -> None:
    session = await store.new_session()
    await store.create_conversation(session, "m")
    with pytest.raises(TooManyConversations):
        await store.import_conversations(session, [("a", conversation()), ("b", conversation("B"))], limit=2)
    assert len(await store.conversations(session)) == 1
    with pytest.raises(SessionGone):
        await store.import_conversations("no-such-session-id-000", [("a", conversation())])


async def test_the_export_holds_every_tree_of_the_session_only(store: Store) -> None:
    session, other = await store.new_session(), await store.new_session()
    first = (await store.create_conversation(session, "m", preprompt="P")).id
    await exchange(store, first, 0, answer="answer 0")
    second = (await store.create_conversation(session, "m")).id
    await exchange(store, second, 0, answer="x")
    await store.create_conversation(other, "m")
    trees = await store.export_conversations(session)
    assert [c.id for c, _ in trees] == [first, second]  # the oldest first
    assert [m.content for m in trees[0][1]] == ["P", "question 0", "answer 0"]
    assert await store.export_conversations("nobody") == []
