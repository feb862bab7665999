"""The export format and the ChatGPT conversion (issue 23, "Export everything", "Import"): pure, no server."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from h2ochat.protocol.chatgpt_export import from_chatgpt
from h2ochat.protocol.export import (
    Export,
    ExportConversation,
    ExportMessage,
    ImportLimits,
    ImportRefused,
    branch,
    conversation_key,
    decode_export,
    encode_export,
    markdown,
    safe_name,
)

FIXTURE = Path(__file__).parent / "fixtures" / "chatgpt_conversations.json"
T0, T1 = "2026-01-02T03:04:05.678Z", "2026-01-02T03:05:00.000Z"


def sample() -> Export:
    messages = [
        ExportMessage("r", None, "system", "Be brief.", T0, T0),
        ExportMessage("q", "r", "user", "Hi", T0, T0),
        ExportMessage("a1", "q", "assistant", "Hello!", T0, T1, finish_reason="stop", generated_tokens=2, score=1),
        ExportMessage("a2", "q", "assistant", "Hey", T1, T1, status="interrupted", interruption="stopped"),
    ]
    conversation = ExportConversation("c1", "Greeting / ../x", "m", T0, T1, "a1", messages, {"temperature": 0.5})
    return Export("h2ochat-export", 1, T1, [conversation])


def test_the_format_round_trips_byte_for_byte() -> None:
    raw = encode_export(sample())
    again = decode_export(raw, ImportLimits())
    assert again == sample()
    assert encode_export(again) == raw
    assert raw.startswith(b'{\n  "format": "h2ochat-export",\n  "version": 1,\n  "exportedAt"')
    assert b'"finishReason": "stop"' in raw and b'"activeId": "a1"' in raw


def test_markdown_is_the_active_branch_and_names_are_safe() -> None:
    conversation = sample().conversations[0]
    assert [m.id for m in branch(conversation)] == ["r", "q", "a1"]
    text = markdown(conversation)
    assert text.startswith("# Greeting / ../x\n\nModel: m\n\n## System prompt\n\nBe brief.\n\n## You\n\nHi\n")
    assert "Hello!" in text and "Hey" not in text
    assert safe_name(conversation.title, "../c1") == "greeting-x-c1.md"
    assert safe_name("", "abc") == "conversation-abc.md"


def refused(raw: bytes, limits: ImportLimits | None = None) -> ImportRefused:
    with pytest.raises(ImportRefused) as caught:
        decode_export(raw, limits or ImportLimits(max_new_tokens=4096))
    return caught.value


def edited(**change: object) -> bytes:
    data = msgspec.json.decode(msgspec.json.encode(sample()))
    for path, value in change.items():
        target = data
        *head, last = path.split("__")
        for part in head:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return msgspec.json.encode(data)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"version": 2}, "version 2"),
        ({"format": "other"}, "not an h2ochat export"),
        ({"conversations__0__title": None}, "missing required field `title`"),
        ({"conversations__0__activeId": "nope"}, "activeId"),
        ({"conversations__0__messages__1__parent": "zzz"}, "parent comes before it"),
        ({"conversations__0__messages__0__role": "user"}, "system root"),
        ({"conversations__0__messages__2__id": "../../etc"}, "malformed or repeated"),
        ({"conversations__0__messages__3__id": "a1"}, "malformed or repeated"),
        ({"conversations__0__messages__2__score": 5}, "score"),
        ({"conversations__0__messages__2__role": "tool"}, "Invalid enum value 'tool'"),
        ({"conversations__0__extra": 1}, "unknown field"),
        ({"conversations__0__title": "x" * 101}, "title must be 1 to 100"),
        ({"conversations__0__settings": {"evil": 1}}, "settings holds"),
        ({"conversations__0__settings": {"max_new_tokens": 10**9}}, "max_new_tokens"),
    ],
)
def test_malformed_exports_are_refused_saying_what(change: dict[str, object], words: str) -> None:
    error = refused(edited(**change))
    assert error.status == 400
    assert words in str(error)


def test_limits_answer_413() -> None:
    raw = encode_export(sample())
    assert refused(raw, ImportLimits(messages=3)).status == 413
    assert refused(raw, ImportLimits(chars=3)).status == 413
    assert refused(raw, ImportLimits(conversations=0)).status == 413
    assert refused(b"not json").status == 400


def test_the_key_is_the_same_for_the_same_conversation_only() -> None:
    one = sample().conversations[0]
    assert conversation_key(one) == conversation_key(
        decode_export(encode_export(sample()), ImportLimits()).conversations[0]
    )
    other = msgspec.structs.replace(one, title="Other")
    assert conversation_key(one) != conversation_key(other)


def test_a_chatgpt_export_becomes_our_tree_with_its_branches() -> None:
    converted = from_chatgpt(FIXTURE.read_bytes(), "served-model", ImportLimits())
    assert len(converted) == 2
    (key, lyon), (_, hello) = converted
    assert key.startswith("chatgpt:")
    assert (lyon.title, lyon.model, lyon.created_at) == ("Packing for Lyon", "served-model", "2023-11-14T22:13:20.500Z")
    by_id = {m.id: m for m in lyon.messages}
    shape = [(m.role, m.content, by_id[m.parent].content if m.parent else None) for m in lyon.messages]
    assert shape == [
        ("system", "You are a travel helper.", None),
        ("user", "What should I pack?", "You are a travel helper."),
        ("assistant", "A raincoat.", "What should I pack?"),
        ("user", "And shoes?", "A raincoat."),
        ("assistant", "Walking shoes.", "And shoes?"),
        ("user", "And the weather?", "A raincoat."),  # the branch: a second question on the same answer
        ("assistant", "Let me look.\n\nRain is likely.", "And the weather?"),  # tool call folded, image dropped
    ]
    assert by_id[lyon.active_id].content == "Walking shoes."  # current_node
    # Untitled, no current node, an empty system message: a default title, the last leaf, no system prompt.
    assert (hello.title, hello.messages[0].content, [m.content for m in hello.messages[1:]]) == (
        "Imported chat",
        "",
        ["Hello", "print(1)"],
    )
    assert hello.active_id == hello.messages[-1].id
    assert hello.messages[1].created_at == hello.created_at  # a null create_time: the conversation's
    again = from_chatgpt(FIXTURE.read_bytes(), "served-model", ImportLimits())
    assert again == converted  # the same ids and keys for the same file


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"[1]", "ChatGPT conversation 0 is malformed"),
        (b'[{"title": "x"}]', "missing required field `mapping`"),
        (b'[{"mapping": {"a": {"parent": "b"}, "b": {"parent": "a"}}}]', "0 roots"),
        (b"[", "not a ChatGPT"),
    ],
)
def test_malformed_chatgpt_files_are_refused(raw: bytes, words: str) -> None:
    with pytest.raises(ImportRefused, match=words):
        from_chatgpt(raw, "m", ImportLimits())


def test_chatgpt_limits() -> None:
    with pytest.raises(ImportRefused) as caught:
        from_chatgpt(FIXTURE.read_bytes(), "m", ImportLimits(conversations=1))
    assert caught.value.status == 413
    with pytest.raises(ImportRefused) as caught:
        from_chatgpt(FIXTURE.read_bytes(), "m", ImportLimits(messages=4))
    assert caught.value.status == 413
