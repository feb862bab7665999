"""The event-stream decoder against docs/protocol.md section 5, case by case.

The property tests (any split, arbitrary bytes, a WHATWG reference) are in
tests/test_reliability_fuzz.py.
"""

from __future__ import annotations

import json

import pytest

from h2ochat.protocol.errors import EventTooLarge, MalformedEvent, ModelOverloaded
from h2ochat.protocol.sse import EventStreamDecoder, ServerSentEvent, encode_comment, encode_event
from h2ochat.protocol.tgi import Details, TGIStreamDecoder, Token, encode_error_event, encode_stream_event


def decode_all(stream: bytes, sizes: list[int] | None = None, **kwargs: int) -> list[tuple[str, str, str]]:
    decoder = EventStreamDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    position = 0
    for size in sizes or [len(stream)]:
        events += decoder.decode(stream[position : position + size])
        position += size
    events += decoder.decode(stream[position:])
    events += decoder.flush()
    return [(event.event, event.data, event.id) for event in events]


def one_byte_reads(stream: bytes) -> list[tuple[str, str, str]]:
    return decode_all(stream, [1] * len(stream))


TGI = (
    b'data:{"token":{"id":23090,"text":"Text","logprob":-0.41,"special":false},"generated_text":null,"details":null}\n\n'
    b'data:{"token":{"id":11,"text":"<|endoftext|>","logprob":-0.11,"special":true},'
    b'"generated_text":"Text","details":{"finish_reason":"eos_token","generated_tokens":2,"seed":null}}\n\n'
)


@pytest.mark.parametrize("reads", [None, "one byte"])
def test_tgi_stream_in_any_chunking(reads: str | None) -> None:
    events = one_byte_reads(TGI) if reads else decode_all(TGI)
    assert [json.loads(data)["token"]["text"] for _, data, _ in events] == ["Text", "<|endoftext|>"]


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_line_endings(newline: bytes) -> None:
    stream = b"data:a" + newline + b"data:b" + newline + newline + b"event:x" + newline + b"data:c" + newline + newline
    expected = [("message", "a\nb", ""), ("x", "c", "")]
    assert decode_all(stream) == expected
    assert one_byte_reads(stream) == expected


def test_crlf_split_between_reads_is_one_line_end() -> None:
    stream = b"data:a\r\n\r\ndata:b\r\n\r\n"
    for cut in range(1, len(stream)):
        assert decode_all(stream, [cut]) == [("message", "a", ""), ("message", "b", "")], cut


def test_event_ending_in_cr_is_dispatched_without_waiting_for_more() -> None:
    decoder = EventStreamDecoder()
    assert [e.data for e in decoder.decode(b"data:a\r\r")] == ["a"]
    assert [e.data for e in decoder.decode(b"\ndata:b\r\n\r\n")] == ["b"]


def test_bom_ignored_once_even_split() -> None:
    stream = b"\xef\xbb\xbfdata:a\n\n"
    assert one_byte_reads(stream) == [("message", "a", "")]
    assert decode_all(b"\xef\xbb\xbf\xef\xbb\xbfdata:a\n\n") == []  # a second BOM makes the field name unknown


def test_comments_keepalives_and_unknown_fields_ignored() -> None:
    stream = b":\n\n: keep-alive\n\nfoo:bar\ndata:x\nretry:250\nbaz\n\n"
    decoder = EventStreamDecoder()
    events = decoder.decode(stream)
    assert [(e.data, e.retry) for e in events] == [("x", 250)]


def test_one_leading_space_removed() -> None:
    assert decode_all(b"data:  two\n\ndata: one\n\ndata:none\n\n") == [
        ("message", " two", ""),
        ("message", "one", ""),
        ("message", "none", ""),
    ]


def test_unicode_line_separators_stay_inside_data() -> None:
    text = "a\u2028b\u0085c\u2029d"
    stream = encode_stream_event(Token(id=1, text=text, special=False))
    (event,) = list(TGIStreamDecoder().decode(stream))
    assert event.token is not None and event.token.text == text
    # A raw U+2028 (not escaped by JSON) must not split the line either.
    assert decode_all(f"data:{text}\n\n".encode()) == [("message", text, "")]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert decode_all(b"data:a\xffb\n\n") == [("message", "a\ufffdb", "")]


def test_multibyte_character_split_across_reads() -> None:
    stream = "data:é€😀\n\n".encode()
    assert one_byte_reads(stream) == [("message", "é€😀", "")]


def test_unfinished_event_dropped_at_end() -> None:
    decoder = EventStreamDecoder()
    assert decoder.decode(b"data:a\n\ndata:b\n") != []
    assert decoder.has_pending_input
    assert decoder.flush() == []


def test_id_persists_and_null_id_ignored() -> None:
    assert decode_all(b"id:1\ndata:a\n\ndata:b\n\nid:x\0y\ndata:c\n\n") == [
        ("message", "a", "1"),
        ("message", "b", "1"),
        ("message", "c", "1"),
    ]


def test_data_field_without_colon_dispatches_empty_data() -> None:
    assert decode_all(b"data\n\n") == [("message", "", "")]
    assert decode_all(b"event:x\n\n") == []


def test_large_event_within_limit_in_small_reads() -> None:
    text = "x" * 300_000
    stream = encode_event(text)
    assert decode_all(stream, [1000] * 400) == [("message", text, "")]


@pytest.mark.parametrize("chunked", [False, True])
def test_event_over_limit_is_a_clear_error(chunked: bool) -> None:
    decoder = EventStreamDecoder(max_event_size=1000)
    stream = b"data:" + b"x" * 2000 + b"\n\n"
    with pytest.raises(EventTooLarge, match="1000 bytes"):
        if chunked:
            for start in range(0, len(stream), 100):
                decoder.decode(stream[start : start + 100])
        else:
            decoder.decode(stream)


def test_events_before_an_oversized_one_come_first_then_the_error() -> None:
    decoder = EventStreamDecoder(max_event_size=100)
    assert [e.data for e in decoder.decode(b"data:a\n\ndata:" + b"x" * 200 + b"\n\n")] == ["a"]
    with pytest.raises(EventTooLarge):
        decoder.decode(b"data:b\n\n")
    unfinished = EventStreamDecoder(max_event_size=100)
    assert [e.data for e in unfinished.decode(b"data:a\n\ndata:" + b"x" * 200)] == ["a"]
    with pytest.raises(EventTooLarge):
        unfinished.flush()


def test_many_blank_lines_between_events() -> None:
    stream = b"data:a\n\n\n\n\ndata:b\n\n\n"
    assert decode_all(stream) == [("message", "a", ""), ("message", "b", "")]
    assert one_byte_reads(stream) == [("message", "a", ""), ("message", "b", "")]


def test_encoder_matches_tgi_bytes() -> None:
    event = encode_stream_event(Token(id=23090, text="Text", logprob=-0.41, special=False))
    assert event == (
        b'data:{"token":{"id":23090,"text":"Text","logprob":-0.41,"special":false},'
        b'"generated_text":null,"details":null}\n\n'
    )
    final = encode_stream_event(
        Token(id=11, text="<|endoftext|>", logprob=-0.11, special=True), "Text", Details("eos_token", 2, None)
    )
    assert final.endswith(
        b'"generated_text":"Text","details":{"finish_reason":"eos_token","generated_tokens":2,"seed":null}}\n\n'
    )
    assert encode_comment() == b":\n\n"
    assert encode_event("a\nb") == b"data:a\ndata:b\n\n"


def test_error_event_and_malformed_event_raise_typed_errors() -> None:
    decoder = TGIStreamDecoder()
    with pytest.raises(ModelOverloaded, match="Model is overloaded"):
        list(decoder.decode(encode_error_event("Model is overloaded", "overloaded")))
    with pytest.raises(MalformedEvent):
        list(TGIStreamDecoder().decode(b"data:{not json\n\n"))


def test_newer_tgi_fields_ignored() -> None:
    stream = (
        b'data:{"index":3,"token":{"id":1,"text":"a","logprob":0.0,"special":false},"top_tokens":[],'
        b'"generated_text":null,"details":null}\n\n'
    )
    (event,) = list(TGIStreamDecoder().decode(stream))
    assert event.token is not None and event.token.text == "a"
