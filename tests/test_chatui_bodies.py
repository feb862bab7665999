"""Current chat-ui's bodies around the stream: the superjson envelope, the create answer, the data part.

Read against what a real chat-ui server sent and was sent (tests/data/chatui-current/).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from h2ochat.protocol import superjson
from h2ochat.protocol.chatui import (
    FinalAnswerUpdate,
    StatusUpdate,
    StreamUpdate,
    TitleUpdate,
    UnknownUpdate,
    stored_updates,
)
from h2ochat.protocol.chatui_bodies import (
    CreatedConversation,
    decode_create_answer,
    decode_message_post,
    encode_create_answer,
    message_post,
)
from h2ochat.protocol.errors import ProtocolError
from tests.chatui_recording import request, response

ROOT = "8413e7ed-5bd2-4bb1-a00a-fa45488fbf70"
CREATED = datetime(2026, 12, 4, 14, 14, 25, 70000, tzinfo=timezone.utc)


def test_create_answer_gives_the_id_and_the_system_root() -> None:
    created = decode_create_answer(response("1-create").body)
    assert (created.id, created.root_message_id) == ("6b12cac1c4f4d7fe466ca041", ROOT)
    assert created.conversation is not None
    (root,) = created.conversation["messages"]
    assert (root["from"], root["createdAt"], created.conversation["updatedAt"]) == ("system", CREATED, CREATED)


def test_create_answer_encoded_as_chat_ui_writes_it() -> None:
    recorded = response("1-create").body
    created = decode_create_answer(recorded)
    assert created.conversation is not None
    conversation = {**created.conversation, "deployedSpaces": None}
    again = encode_create_answer(created.id, conversation)
    assert decode_create_answer(again) == created
    # chat-ui marks deployedSpaces "undefined" as well; every Date is listed as the recording lists it.
    inner = superjson.decode(msgspec.json.decode(again)["conversation"])
    assert inner == created.conversation


def test_create_answer_of_a_server_without_the_tree() -> None:
    assert decode_create_answer(b'{"conversationId":"abc"}') == CreatedConversation("abc", None, None)


@pytest.mark.parametrize("body", [b"<html>Sign in</html>", b'{"message":"Invalid model"}', b"[]"])
def test_a_body_that_is_no_create_answer_is_a_clear_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"not {'conversationId': …}.*chat-ui server of today"):
        decode_create_answer(body)


def test_stored_conversation_with_its_updates() -> None:
    """The read after the answer: superjson dates, and the stored updates in the stream's own types."""
    conversation = superjson.decode(response("3b-get-after").body)
    _system, user, assistant = conversation["messages"]
    assert isinstance(user["createdAt"], datetime) and conversation["deployedSpaces"] is None
    assert assistant["ancestors"] == [ROOT, user["id"]]
    updates = stored_updates(assistant["updates"])
    assert updates[:3] == [StatusUpdate("started"), TitleUpdate("What is the capital of"), StreamUpdate("", length=3)]
    assert updates[-2:] == [FinalAnswerUpdate(assistant["content"], interrupted=False), StatusUpdate("finished")]
    assert stored_updates([{"type": "debug", "n": 1}]) == [UnknownUpdate("debug", {"n": 1})]


def test_superjson_types_and_escaped_paths() -> None:
    body = {
        "json": {"a.b": "2026-01-01T00:00:00.000Z", "n": ["NaN", "-Infinity"], "big": "12345678901234567890",
                 "s": [1, 2], "m": [["k", "2026-01-02T00:00:00.000Z"]], "u": None, "id": "65f0c0ffee",
                 "when": "not a date"},
        "meta": {"values": {"a\\.b": ["Date"], "n.0": ["number"], "n.1": ["number"], "big": ["bigint"], "s": ["set"],
                            "m": ["map", {"0.1": ["Date"]}], "u": ["undefined"], "id": [["custom", "ObjectId"]],
                            "when": ["Date"], "missing.path": ["Date"]}, "v": 1},
    }  # fmt: skip
    value = superjson.decode(body)
    assert value["a.b"] == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert value["n"][0] != value["n"][0] and value["n"][1] == float("-inf")
    assert (value["big"], value["s"], value["u"], value["id"]) == (12345678901234567890, {1, 2}, None, "65f0c0ffee")
    assert value["m"] == {"k": datetime(2026, 1, 2, tzinfo=timezone.utc)}
    assert value["when"] == "not a date"  # an invalid date stays the text it was
    assert body["json"]["a.b"] == "2026-01-01T00:00:00.000Z"  # the caller's envelope is left alone
    assert superjson.decode({"json": "2026-01-01T00:00:00.000Z", "meta": {"values": ["Date"]}}).year == 2026


@pytest.mark.parametrize("body", [b'{"conversations":[]}', b"not json", b"[1]"])
def test_a_body_that_is_no_envelope_is_a_clear_error(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="superjson envelope"):
        superjson.decode(body)


KEYS = st.text(st.characters(blacklist_categories=["Cs"]), max_size=8)
MOMENTS = st.datetimes(timezones=st.just(timezone.utc)).map(lambda t: t - timedelta(microseconds=t.microsecond % 1000))
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10) | MOMENTS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@given(VALUES)
def test_superjson_round_trip_with_dates_anywhere(value: object) -> None:
    """Keys holding dots and backslashes too: superjson's path escapes, both ways."""
    assert superjson.decode(msgspec.json.encode(superjson.encode(value))) == value


def test_iso_dates_as_javascript_writes_them() -> None:
    assert superjson.iso_date(CREATED) == "2026-12-04T14:14:25.070Z"
    later = CREATED.astimezone(timezone(timedelta(hours=2)))
    assert superjson.iso_date(later) == "2026-12-04T14:14:25.070Z"
    assert superjson.iso_date(datetime(999, 1, 1)) == "0999-01-01T00:00:00.000Z"


def test_data_part_as_a_real_client_sent_it() -> None:
    data = request("3-message").body.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[0]
    post = decode_message_post(data)
    assert (post.inputs, post.id, post.is_retry, post.generation_id) == (
        "What is the capital of France?",
        ROOT,
        False,
        None,
    )


def test_data_part_round_trip_and_chat_ui_treatment() -> None:
    post = decode_message_post(message_post("a\r\nb", ROOT, generation_id="ffa06f55-75a8-4131-9492-a160de06a0cf"))
    assert (post.inputs, post.id, post.generation_id) == ("a\nb", ROOT, "ffa06f55-75a8-4131-9492-a160de06a0cf")
    assert b'"is_retry":true' in message_post("x", ROOT, is_retry=True)
    assert b"is_retry" not in message_post("x", ROOT)  # left out when false, as chat-ui's page does
    old_page = decode_message_post(f'{{"inputs":"x","id":"{ROOT}","is_continue":false,"web_search":false,"x":1}}')
    assert old_page.web_search is False and old_page.inputs == "x"


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("inputs=hello", r"not the JSON of a message.*send"),
        ('{"inputs": 5}', "not the JSON of a message"),
        ('{"inputs": "", "id": "' + ROOT + '"}', "inputs is empty"),
        ('{"inputs": "x", "id": "6b12cac1c4f4d7fe466ca041"}', "id must be a UUID"),
        ('{"inputs": "x", "generationId": "nope"}', "generationId must be a UUID"),
    ],
)
def test_a_bad_data_part_says_what_is_wrong(data: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        decode_message_post(data)
