"""The JSON nesting limit (protocol/nesting.py): the same answer on every Python.

Interpreters stop deep JSON at different depths (about 1,000 levels on 3.10 and
3.11, 1,500 on 3.12, 10,000 on 3.13), so these tests sit on both sides of our
own limit, far below all of them: what passes or fails here cannot depend on
the version running it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from h2ochat.protocol.errors import MalformedEvent, body_excerpt
from h2ochat.protocol.nesting import MAX_JSON_DEPTH, too_deep
from h2ochat.protocol.tgi import TGIStreamDecoder, encode_stream_event
from h2ochat.protocol.tgi import Token as TGIToken
from h2ochat.server import RunningServer, start_server
from h2ochat.server.chatui.routes import BadBody, parse_json
from h2ochat.server.config import OpenAIEndpoint
from tests.conftest import RawClient
from tests.test_upstream import Peer, chunk, config_with, stream_events


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """``depth`` levels of arrays and objects, alternating, around ``inner``."""
    for level in range(depth):
        inner = b"[" + inner + b"]" if level % 2 else b'{"k":' + inner + b"}"
    return inner


def depth_of(value: Any) -> int:
    """The reference: arrays and objects each count one level."""
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


# Strings full of what confuses a bracket counter: brackets, quotes and backslashes.
_tricky_text = st.text(alphabet='[]{}"\\ax\n', max_size=12)
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_tricky_text, children, max_size=4),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(_json_values, st.integers(min_value=0, max_value=6), st.booleans())
def test_too_deep_agrees_with_the_reference(value: Any, limit: int, as_text: bool) -> None:
    text = json.dumps(value, ensure_ascii=False)
    data: str | bytes = text if as_text else text.encode()
    assert too_deep(data, limit) == (depth_of(value) > limit)


def test_brackets_inside_strings_do_not_count() -> None:
    inside = json.dumps({"text": "[" * 1000 + '\\"{' * 500 + "\\"}).encode()
    assert not too_deep(inside)
    assert too_deep(json.dumps({"text": "[" * 1000, "deep": json.loads(nested(MAX_JSON_DEPTH + 1))}).encode())


def test_the_limit_itself_is_accepted() -> None:
    assert not too_deep(nested(MAX_JSON_DEPTH))
    assert too_deep(nested(MAX_JSON_DEPTH + 1))


# The client's event decoder -------------------------------------------------------------------


def _event(ignored: bytes) -> bytes:
    """A token event with a field this client does not know, holding ``ignored``."""
    return b'data:{"token":{"id":1,"text":"a","special":false},"generated_text":null,"top_tokens":' + ignored + b"}\n\n"


def _decode_whole(stream: bytes) -> list[str]:
    return [event.token.text for event in TGIStreamDecoder().decode(stream) if event.token is not None]


def _decode_bytewise(stream: bytes) -> list[str]:
    decoder = TGIStreamDecoder()
    return [e.token.text for i in range(len(stream)) for e in decoder.decode(stream[i : i + 1]) if e.token is not None]


def _decode_after_another(stream: bytes) -> list[str]:
    # Two events in one read take the decoder's general path.
    return _decode_whole(encode_stream_event(TGIToken(0, "first")) + stream)[1:]


@pytest.mark.parametrize("decode", [_decode_whole, _decode_bytewise, _decode_after_another])
def test_an_event_nested_to_the_limit_decodes(decode: Callable[[bytes], list[str]]) -> None:
    # The event's own object is the first level.
    assert decode(_event(nested(MAX_JSON_DEPTH - 1))) == ["a"]


@pytest.mark.parametrize("decode", [_decode_whole, _decode_bytewise, _decode_after_another])
def test_an_event_nested_past_the_limit_is_malformed(decode: Callable[[bytes], list[str]]) -> None:
    with pytest.raises(MalformedEvent, match=f"nested more than {MAX_JSON_DEPTH} levels"):
        decode(_event(nested(MAX_JSON_DEPTH)))


def test_an_error_body_nested_past_the_limit_is_shown_as_text() -> None:
    # Decoded JSON is shown re-encoded (a space after each colon); a body past the limit as it came.
    shallow = b'{"message": ' + nested(3, b'"why"') + b"}"
    assert body_excerpt(shallow, "application/json") == '{"message": {"k": [{"k": "why"}]}}'
    deep = b'{"message": ' + nested(MAX_JSON_DEPTH + 1, b'"why"') + b"}"
    assert body_excerpt(deep, "application/json").startswith('{"message": {"k":[{"k":[')


# The server's request bodies ------------------------------------------------------------------


def test_parse_json_refuses_past_the_limit_and_decodes_to_it() -> None:
    assert depth_of(parse_json(nested(MAX_JSON_DEPTH), Any)) == MAX_JSON_DEPTH
    with pytest.raises(BadBody, match=f"nested more than {MAX_JSON_DEPTH} levels"):
        parse_json(nested(MAX_JSON_DEPTH + 1), Any)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/generate", b'{"inputs": "Hi", "parameters": {"max_new_tokens": %s}}', 422),  # TGI's validation status
        ("/v1/chat/completions", b'{"model": "test/fixed", "messages": %s}', 400),
    ],
    ids=["tgi", "openai"],
)
async def test_a_request_nested_past_the_limit_is_refused_saying_so(
    fixed_server: RunningServer, path: str, body: bytes, status: int
) -> None:
    client = RawClient(fixed_server.url)
    try:
        data = body % nested(MAX_JSON_DEPTH)  # with the body's own levels: past the limit
        answer = await client.request("POST", path, data=data, headers={"Content-Type": "application/json"})
        assert answer[0] == status
        assert f"nested more than {MAX_JSON_DEPTH} levels" in json.dumps(answer[1])
    finally:
        await client.close()


# The server's upstream engines ----------------------------------------------------------------


async def test_an_upstream_chunk_nested_past_the_limit_ends_the_answer_with_an_error_event(
    aiohttp_server: Callable[..., Awaitable[TestServer]], caplog: pytest.LogCaptureFixture
) -> None:
    deep = {**chunk("lo"), "extra": json.loads(nested(MAX_JSON_DEPTH))}  # one level more with the chunk
    url = await Peer(chunks=[chunk("Hel"), deep]).serve(aiohttp_server)
    with caplog.at_level(logging.WARNING, logger="h2ochat.server"):
        async with start_server(config_with("down", OpenAIEndpoint(url=url))) as down:
            parsed = await stream_events(down)
    assert [event["token"]["text"] for event in parsed[:-1]] == ["Hel"]
    assert parsed[-1]["error_type"] == "generation"
    # The reason goes to the client's error event, or only to the server's log where the
    # server gives clients a generic message for upstream failures.
    assert f"nested more than {MAX_JSON_DEPTH} levels" in parsed[-1]["error"] + caplog.text
