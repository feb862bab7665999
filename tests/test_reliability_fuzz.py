"""Fuzzing the event-stream decoder, the TGI layer on top of it, and the client's error mapping.

The decoder is checked against a plain reference implementation of the WHATWG
event-stream rules written here (all four fields, BOM, CR/LF/CRLF, the retry
and last-id state), on valid streams and on arbitrary bytes, whole and split
at arbitrary positions. ``H2OCHAT_FUZZ_EXAMPLES`` raises the number of
examples (``python -m reliability fuzz`` does).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2ochat.protocol.errors import (
    ERROR_TYPES,
    EventTooLarge,
    GenerationError,
    H2oChatError,
    HTTPStatusError,
    MalformedEvent,
    body_excerpt,
    error_for_event,
    error_for_status,
    parse_retry_after,
)
from h2ochat.protocol.sse import EventStreamDecoder, encode_comment, encode_event
from h2ochat.protocol.tgi import Details, StreamEvent, TGIStreamDecoder, Token, encode_error_event, encode_stream_event
from tests.whatwg import Event, reference

EXAMPLES = int(os.environ.get("H2OCHAT_FUZZ_EXAMPLES", "200"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode(stream: bytes, cuts: list[int] | None = None, max_event_size: int = 1 << 30) -> list[Event]:
    decoder = EventStreamDecoder(max_event_size)
    events = []
    for piece in _pieces(stream, cuts or []):
        events += decoder.decode(piece)
    events += decoder.flush()
    return [(e.event, e.data, e.id, e.retry) for e in events]


def _pieces(stream: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(c for c in cuts if 0 <= c <= len(stream)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


def test_the_reference_knows_the_rules() -> None:
    """The reference itself, on the standard's own examples: it must be right before it judges."""
    assert reference(b"data: YHOO\ndata: +2\ndata: 10\n\n") == [("message", "YHOO\n+2\n10", "", None)]
    assert reference(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n") == [
        ("message", "first event", "1", None),
        ("message", "second event", "", None),
    ]
    assert reference(b"data\n\ndata\ndata\n\ndata:") == [("message", "", "", None), ("message", "\n", "", None)]
    assert reference(b"data:test\n\ndata: test\n\n") == [("message", "test", "", None)] * 2
    assert reference(b"\xef\xbb\xbfretry: 10\r\nevent: add\rdata: 1\r\n\r") == [("add", "1", "", 10)]
    assert reference(b"retry: 1x\ndata: a\n\n") == [("message", "a", "", None)]


# Valid streams -----------------------------------------------------------------------------------

_value = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12)
_line = st.one_of(
    st.builds("data:{}".format, _value),
    st.builds("data: {}".format, _value),
    st.builds("event:{}".format, _value),
    st.builds("id:{}".format, _value),
    st.builds("id:{}\0x".format, _value),
    st.builds("retry:{}".format, st.integers(0, 10**6)),
    st.builds("retry: {}x".format, st.integers(0, 99)),
    st.builds(":{}".format, _value),
    st.sampled_from(["data", "event", "id", "retry", "", "", "data:[DONE]"]),
    _value,
)
_ending = st.sampled_from([b"\n", b"\r", b"\r\n"])


@st.composite
def valid_streams(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.tuples(_line, _ending), max_size=30))
    stream = b"".join(line.encode() + end for line, end in lines)
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + stream


cut_lists = st.lists(st.integers(0, 4000), max_size=12)


@fuzz
@given(valid_streams(), cut_lists)
def test_valid_streams_decode_like_the_reference_however_split(stream: bytes, cuts: list[int]) -> None:
    whole = decode(stream)
    assert whole == reference(stream)
    assert decode(stream, [c % (len(stream) + 1) for c in cuts]) == whole


@fuzz
@given(valid_streams())
def test_one_byte_reads_decode_like_one_read(stream: bytes) -> None:
    assert decode(stream, list(range(len(stream)))) == decode(stream)


# Arbitrary bytes -----------------------------------------------------------------------------------

# Bytes that matter to the grammar, so that random input often looks like a stream.
_alphabet = st.sampled_from([b"\n", b"\r", b"\r\n", b":", b" ", b"data", b"id", b"event", b"retry", b"\xef\xbb\xbf"])
noise = st.lists(st.one_of(_alphabet, st.binary(max_size=6)), max_size=60).map(b"".join)


@fuzz
@given(st.one_of(noise, st.binary(max_size=300)), cut_lists)
def test_arbitrary_bytes_decode_like_the_reference_however_split(stream: bytes, cuts: list[int]) -> None:
    whole = decode(stream)
    assert whole == reference(stream)
    assert decode(stream, [c % (len(stream) + 1) for c in cuts]) == whole


@fuzz
@given(st.one_of(noise, st.binary(max_size=300)), cut_lists, st.integers(1, 64))
def test_arbitrary_bytes_raise_nothing_but_typed_errors(stream: bytes, cuts: list[int], limit: int) -> None:
    pieces = _pieces(stream, [c % (len(stream) + 1) for c in cuts])
    for decoder in (EventStreamDecoder(limit), TGIStreamDecoder(limit)):
        try:
            for piece in pieces:
                for _ in decoder.decode(piece):
                    pass
        except H2oChatError:
            pass  # EventTooLarge, MalformedEvent, a GenerationError: all typed


@fuzz
@given(st.one_of(noise, st.binary(max_size=300)), st.integers(1, 64))
def test_the_size_limit_holds_for_any_input(stream: bytes, limit: int) -> None:
    """Nothing longer than the limit is ever dispatched; an oversized event is an EventTooLarge."""
    decoder = EventStreamDecoder(limit)
    try:
        events = decoder.decode(stream)
    except EventTooLarge:
        return
    assert all(len(event.data.encode()) <= limit for event in events)


# The TGI layer -------------------------------------------------------------------------------------

_token_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
_tokens = st.lists(st.tuples(_token_text, st.booleans()), min_size=1, max_size=12)


def tgi_stream(tokens: list[tuple[str, bool]], keepalives: bool = False) -> bytes:
    parts = []
    for index, (text, special) in enumerate(tokens[:-1]):
        parts.append(encode_stream_event(Token(id=index, text=text, logprob=-0.5, special=special)))
        if keepalives:
            parts.append(encode_comment())
    text, special = tokens[-1]
    whole = "".join(t for t, s in tokens if not s)
    final = Token(id=len(tokens), text=text, special=special)
    parts.append(encode_stream_event(final, whole, Details("length", len(tokens), None)))
    return b"".join(parts)


def _events(decoder: TGIStreamDecoder, pieces: list[bytes]) -> Iterator[StreamEvent]:
    """Every event, one at a time, as a client consumes them (an error ends the iteration)."""
    for piece in pieces:
        yield from decoder.decode(piece)


def tgi_decode(stream: bytes, cuts: list[int]) -> list[StreamEvent]:
    decoder = TGIStreamDecoder()
    events: list[StreamEvent] = []
    for piece in _pieces(stream, [c % (len(stream) + 1) for c in cuts]):
        events += decoder.decode(piece)
    return events


@fuzz
@given(_tokens, st.booleans(), cut_lists)
def test_tgi_tokens_come_out_exactly_however_split(tokens: list[tuple[str, bool]], keep: bool, cuts: list[int]) -> None:
    events = tgi_decode(tgi_stream(tokens, keep), cuts)
    assert [(e.token.text, e.token.special) for e in events if e.token is not None] == tokens
    assert events[-1].generated_text == "".join(t for t, s in tokens if not s)
    assert all(e.generated_text is None for e in events[:-1])


@fuzz
@given(_tokens, st.one_of(st.sampled_from(sorted(ERROR_TYPES)), _token_text), _token_text, cut_lists)
def test_error_events_become_their_typed_exception_after_the_tokens_before_them(
    tokens: list[tuple[str, bool]], error_type: str, message: str, cuts: list[int]
) -> None:
    stream = tgi_stream(tokens)
    stream = stream[: stream.rindex(b"data:")] + encode_error_event(message, error_type)
    received = []
    with pytest.raises(GenerationError) as caught:
        for event in _events(TGIStreamDecoder(), _pieces(stream, [c % (len(stream) + 1) for c in cuts])):
            received.append(event.token.text if event.token is not None else None)
    assert type(caught.value) is ERROR_TYPES.get(error_type, GenerationError)
    assert message in str(caught.value)
    assert received == [t for t, _ in tokens[:-1]]


_json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _token_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_token_text, inner, max_size=3),
    max_leaves=10,
)


@fuzz
@given(_json_junk)
def test_any_json_event_is_a_stream_event_or_a_typed_error(value: Any) -> None:
    stream = b"data:" + json.dumps(value).encode() + b"\n\n"
    with contextlib.suppress(MalformedEvent, GenerationError):
        list(TGIStreamDecoder().decode(stream))


@pytest.mark.parametrize(
    "event",
    [
        b'{"index":' + b"[" * 5000 + b"]" * 5000 + b"}",  # a field TGI added later, ignored when sane
        b'{"top_tokens":' + b"[" * 5000 + b"}",  # not even well-formed
        b'{"token":{"id":1,"text":"a","extra":' + b"[" * 5000 + b"]" * 5000 + b"}}",
    ],
    ids=["index", "top_tokens unclosed", "inside token"],
)
def test_deeply_nested_json_in_an_event_is_a_malformed_event(event: bytes) -> None:
    with pytest.raises(MalformedEvent):
        list(TGIStreamDecoder().decode(b"data:" + event + b"\n\n"))


def test_tokens_before_an_oversized_event_do_not_depend_on_read_boundaries() -> None:
    stream = encode_stream_event(Token(1, "Hello")) + encode_event("x" * 5000)

    def tokens_before_error(cuts: list[int]) -> list[str | None]:
        seen = []
        with pytest.raises(EventTooLarge):
            for event in _events(TGIStreamDecoder(1024), _pieces(stream, cuts)):
                seen.append(event.token.text if event.token is not None else None)
        return seen

    assert tokens_before_error(list(range(len(stream)))) == ["Hello"]  # one byte per read
    assert tokens_before_error([]) == ["Hello"]  # the whole stream in one read


# The client's error mapping (protocol/errors.py) -------------------------------------------------


@fuzz
@given(st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or seconds >= 0


def test_retry_after_forms() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("\u00b2") is None  # a digit to str.isdigit(), not to float()
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == 60.0
    assert parse_retry_after("soon") is None and parse_retry_after("-1") is None


@fuzz
@given(
    st.one_of(st.binary(max_size=300), _json_junk.map(lambda v: json.dumps(v).encode())),
    st.sampled_from(["", "application/json", "text/html", "text/plain", "application/problem+json"]),
)
def test_body_excerpt_is_one_short_line_for_any_body(body: bytes, content_type: str) -> None:
    excerpt = body_excerpt(body, content_type)
    assert excerpt and len(excerpt) <= 200 and "\n" not in excerpt


@pytest.mark.parametrize("body", [b"[" * 5000, b'{"message":' * 3000, b"[" * 5000 + b"]" * 5000])
def test_body_excerpt_of_absurdly_nested_json(body: bytes) -> None:
    assert body_excerpt(body, "application/json")


@pytest.mark.parametrize("body", [b"\x1c", "\u2028 \u00a0".encode(), b'{"message": " "}', b"<title> </title>"])
def test_body_excerpt_of_a_blank_body_says_so(body: bytes) -> None:
    # Found by the long fuzz run: whitespace to str but not to bytes.strip() gave an empty excerpt.
    assert body_excerpt(body) == "(empty body)"


@fuzz
@given(
    st.integers(400, 599), st.sampled_from(["settings", "conversation", "message", "delete"]), st.binary(max_size=80)
)
def test_every_error_status_maps_to_a_typed_error_naming_it(status: int, step: str, body: bytes) -> None:
    error = error_for_status(step, status, "http://h/x", body, "", "1")
    assert isinstance(error, HTTPStatusError) and error.status == status
    assert re.search(rf"{step} step failed: HTTP {status} from http://h/x", str(error))


@fuzz
@given(_token_text, st.one_of(st.none(), _token_text))
def test_every_error_event_maps_to_a_generation_error(message: str, error_type: str | None) -> None:
    error = error_for_event(message, error_type, "partial")
    assert isinstance(error, GenerationError) and error.partial_text == "partial" and message in str(error)
