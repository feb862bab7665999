"""Current chat-ui's answer stream: the NDJSON decoder and encoder of protocol/chatui.py.

The reference is a real chat-ui server's answer (tests/data/chatui-current/),
replayed in every chunking; then encoder→decoder round trips and hostile input.
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2ochat.protocol.chatui import (
    FINAL_ANSWER_SPACES,
    KEEP_ALIVE,
    ChatUIStreamDecoder,
    FileUpdate,
    FinalAnswerUpdate,
    MessageUpdate,
    ReasoningUpdate,
    RouterMetadataUpdate,
    StatusUpdate,
    StreamUpdate,
    TitleUpdate,
    ToolUpdate,
    UnknownUpdate,
    WebSearchUpdate,
    encode_token,
    encode_update,
)
from h2ochat.protocol.errors import (
    EventTooLarge,
    GenerationError,
    GenerationFailed,
    IncompleteStream,
    InputValidationError,
    MalformedEvent,
    ModelOverloaded,
)
from tests.chatui_recording import response

EXAMPLES = int(os.environ.get("H2OCHAT_FUZZ_EXAMPLES", "200"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RECORDED = response("3-message")
# What the recorded answer holds, read off the bytes by eye (tests/data/chatui-current/exchange.txt).
EXPECTED: list[MessageUpdate] = [
    StatusUpdate("started"),
    TitleUpdate("What is the capital of"),
    *(StreamUpdate(token) for token in ["The", " capital", " of", " France", " is", " Paris", "."]),
    FinalAnswerUpdate("The capital of France is Paris.", interrupted=False),
    StatusUpdate("finished"),
]


def decode(pieces: list[bytes], **kwargs: int) -> list[MessageUpdate]:
    decoder = ChatUIStreamDecoder(**kwargs)
    updates: list[MessageUpdate] = []
    for piece in pieces:
        updates += decoder.decode(piece)
    return updates + decoder.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(cut for cut in cuts if 0 <= cut <= len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_the_recording_is_what_the_tests_expect() -> None:
    """The replayed answer holds its quirks: NUL padding, keep-alives and the 4096 spaces."""
    body = RECORDED.body
    assert b"\r\ncontent-type: application/jsonl\r\n" in RECORDED.head.lower()
    assert body.count(KEEP_ALIVE) == 2 and b"\\u0000" in body
    assert FINAL_ANSWER_SPACES + b'{"type":"status","status":"finished"}\n' in body


@pytest.mark.parametrize("reads", ["as the server wrote it", "whole", "one byte at a time"])
def test_recorded_answer_in_every_chunking(reads: str) -> None:
    body = RECORDED.body
    pieces = {
        "as the server wrote it": RECORDED.chunks,
        "whole": [body],
        "one byte at a time": split(body, [*range(len(body))]),
    }
    assert decode(pieces[reads]) == EXPECTED


@fuzz
@given(st.lists(st.integers(0, len(RECORDED.body)), max_size=40))
def test_recorded_answer_split_anywhere(cuts: list[int]) -> None:
    assert decode(split(RECORDED.body, cuts)) == EXPECTED


def test_encoder_writes_the_recorded_answer_byte_for_byte() -> None:
    """What the server will write is what chat-ui writes: padding, key order, keep-alives, spaces."""
    tokens = [update.token for update in EXPECTED if isinstance(update, StreamUpdate)]
    written = [
        encode_update(StatusUpdate("started")),
        encode_update(TitleUpdate("What is the capital of")),
        KEEP_ALIVE,
        *(encode_token(token) for token in tokens),
        KEEP_ALIVE,
        encode_update(FinalAnswerUpdate("The capital of France is Paris.")),
        FINAL_ANSWER_SPACES,
        encode_update(StatusUpdate("finished")),
    ]
    assert written == RECORDED.chunks


def test_padding_counts_utf16_units_as_javascript_does() -> None:
    # "🙂" is two UTF-16 code units, so padEnd(16) adds 13 NULs after " 🙂", not 14.
    assert encode_token(" 🙂").count(b"\\u0000") == 13
    assert encode_token("x" * 20).count(b"\\u0000") == 0
    assert encode_token("ab", pad=False) == b'{"type":"stream","token":"ab"}\n'


# Text without NUL: on this wire NUL is padding, and the decoder removes it wherever it is.
TEXT = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0"), max_size=40)
UPDATES = st.one_of(
    st.builds(StatusUpdate, st.sampled_from(["started", "finished"]), st.none() | TEXT),
    st.builds(StreamUpdate, TEXT),
    st.builds(TitleUpdate, TEXT),
    st.builds(FinalAnswerUpdate, TEXT, st.booleans()),
    st.builds(ReasoningUpdate, st.just("stream"), token=TEXT),
    st.builds(ReasoningUpdate, st.just("status"), status=TEXT),
    st.builds(RouterMetadataUpdate, TEXT, TEXT, st.none() | TEXT),
    st.builds(FileUpdate, TEXT, st.text("0123456789abcdef", min_size=64, max_size=64), TEXT),
    st.builds(
        ToolUpdate, st.uuids().map(str), st.sampled_from(["call", "result", "eta"]), eta=st.none() | st.floats(0, 1e6)
    ),
    st.builds(WebSearchUpdate, st.sampled_from(["update", "finished"]), st.none() | TEXT),
    st.builds(
        UnknownUpdate,
        st.sampled_from(["debug", "newKind"]),
        st.dictionaries(TEXT.filter(lambda k: k != "type"), TEXT, max_size=3),
    ),
)


@fuzz
@given(
    st.lists(st.tuples(UPDATES, st.booleans(), st.booleans()), max_size=20), st.lists(st.integers(0, 5000), max_size=20)
)
def test_round_trip_in_any_chunking(script: list[tuple[MessageUpdate, bool, bool]], cuts: list[int]) -> None:
    """Every update comes back as it was encoded, with keep-alives and padding between, split anywhere."""
    body = b""
    for update, keep_alive, padded in script:
        body += KEEP_ALIVE if keep_alive else b""
        body += encode_token(update.token) if padded and isinstance(update, StreamUpdate) else encode_update(update)
        body += FINAL_ANSWER_SPACES if isinstance(update, FinalAnswerUpdate) else b""
    assert decode(split(body, cuts)) == [update for update, _, _ in script]


def test_nul_anywhere_in_a_token_is_removed_as_the_page_does() -> None:
    reasoning = b'{"type":"reasoning","subtype":"stream","token":"hm\\u0000"}\n'
    stream = [b'{"type":"stream","token":"a\\u0000b\\u0000"}\n', b'{"type":"stream","token":"\\u0000"}\n', reasoning]
    expected = [StreamUpdate("ab"), StreamUpdate(""), ReasoningUpdate("stream", token="hm")]
    assert decode(stream) == expected
    assert decode([b"".join(stream)]) == expected


def test_unknown_update_type_is_kept_not_fatal() -> None:
    line = b'{"type":"debug","level":3,"note":"x"}\n'
    (update,) = decode([line, KEEP_ALIVE])
    assert update == UnknownUpdate("debug", {"level": 3, "note": "x"})
    assert encode_update(update) == line


def test_stored_form_of_tokens_and_crlf_lines() -> None:
    assert decode([b'{"type":"stream","token":"","len":3}\r\n']) == [StreamUpdate("", length=3)]


def test_line_over_the_limit_is_a_clear_error_in_any_reads() -> None:
    line = b'{"type":"stream","token":"' + b"x" * (1 << 20) + b'"}\n'
    with pytest.raises(EventTooLarge, match=r"1048576 bytes.*raise max_line_size"):
        decode([line])
    with pytest.raises(EventTooLarge):  # raised before the newline arrives: memory stays bounded
        decode(split(line[:-1], [*range(0, len(line), 4096)]))


def test_updates_before_an_oversized_line_come_first() -> None:
    decoder = ChatUIStreamDecoder(max_line_size=100)
    assert decoder.decode(b'{"type":"title","title":"t"}\n' + b" " * 200) == [TitleUpdate("t")]
    with pytest.raises(EventTooLarge, match="100 bytes"):
        decoder.flush()
    with pytest.raises(EventTooLarge, match="100 bytes"):  # one short line alone in its read too
        ChatUIStreamDecoder(max_line_size=100).decode(encode_update(TitleUpdate("t" * 100)))
    within = b'{"type":"stream","token":"' + b"y" * 60 + b'"}\n'
    assert decode(split(within, [*range(len(within))]), max_line_size=100) == [StreamUpdate("y" * 60)]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"type":"stream","token":"a"', "not JSON"),
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"[1, 2]", "JSON list where an update object belongs"),
        (b'{"token":"a"}', "without a string 'type'"),
        (b'{"type":"stream","token":5}', "'stream' update of the wrong shape"),
        (b"[" * 200 + b"]" * 200, "nested more than 128 levels"),
    ],
)
def test_a_line_that_is_no_update_is_malformed_after_the_updates_before_it(line: bytes, says: str) -> None:
    decoder = ChatUIStreamDecoder()
    assert decoder.decode(b'{"type":"status","status":"started"}\n' + line + b"\n") == [StatusUpdate("started")]
    with pytest.raises(MalformedEvent, match=says) as caught:
        decoder.decode(b"")
    if "nested" not in says:  # a line of another protocol: the message says which server speaks it
        assert "chat-ui server of today" in str(caught.value)


def test_invalid_utf8_becomes_replacement_characters() -> None:
    assert decode([b'{"type":"stream","token":"a\xffb"}\n']) == [StreamUpdate("a\ufffdb")]


@pytest.mark.parametrize(
    ("fields", "error", "says"),
    [
        (',"message":"Payment required","statusCode":402', GenerationError, r"status 402.*no credits left"),
        (',"message":"Rate limited","statusCode":429', ModelOverloaded, "busy: wait"),
        (',"message":"Input too long","statusCode":400', InputValidationError, "Input too long"),
        (',"message":"No output was generated. Something went wrong."', GenerationFailed, "No output"),
    ],
)
def test_status_error_is_the_typed_error_after_the_tokens_before_it(
    fields: str, error: type[GenerationError], says: str
) -> None:
    decoder = ChatUIStreamDecoder()
    line = b'{"type":"status","status":"error"' + fields.encode() + b"}\n"
    assert decoder.decode(encode_token("Hi") + line) == [StreamUpdate("Hi")]
    with pytest.raises(error, match=says) as caught:
        decoder.flush()
    assert type(caught.value) is error
    with pytest.raises(error):  # alone in its read, it is raised at once
        ChatUIStreamDecoder().decode(line)


def test_last_line_without_newline() -> None:
    assert decode([b'{"type":"status","status":"finished"}']) == [StatusUpdate("finished")]
    assert decode([encode_update(FinalAnswerUpdate("x")), FINAL_ANSWER_SPACES]) == [FinalAnswerUpdate("x")]
    with pytest.raises(IncompleteStream, match=r"ended inside a line.*cut"):
        decode([encode_token("a"), b'{"type":"stream","tok'])
    with pytest.raises(MalformedEvent, match="nested more than 128 levels"):
        decode([b"[" * 100_000 + b"]" * 100_000])
