"""The one OpenAI chunk builder (protocol/openai.py) that the client and the server's /v1 share. Pure."""

from __future__ import annotations

import msgspec

from h2ochat.protocol.openai import ChatCompletionChunk, CompletionBuilder


def _content(chunks: list[ChatCompletionChunk | None]) -> list[str | None]:
    return [chunk.choices[0].delta.content for chunk in chunks if chunk is not None and chunk.choices]


def test_a_streamed_answer_without_its_stop_sequence() -> None:
    builder = CompletionBuilder("m", ["END"], include_usage=True)
    first = builder.start()
    middle = [builder.add(text) for text in ["Hel", "lo E", "N", "D and more"]]
    last = builder.finish("stop_sequence", 3, 4)
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert _content(middle) == ["Hel", "lo "]  # "E" and "N" were held back: they might begin "END"
    assert [chunk.choices[0].finish_reason for chunk in last if chunk.choices] == ["stop"]
    assert last[-1].choices == [] and last[-1].usage is not None and last[-1].usage.total_tokens == 7
    assert {chunk.id for chunk in [first, *last]} == {builder.id} and builder.id.startswith("chatcmpl-")
    whole = builder.result()
    assert whole.choices[0].message.content == "Hello " and whole.choices[0].finish_reason == "stop"


def test_held_text_is_released_when_the_answer_ends_otherwise() -> None:
    builder = CompletionBuilder("m", ["STOP"])
    assert builder.add("go ST") is not None
    last = builder.finish("length", 0, 2)
    assert _content(last) == ["ST", None]  # the held "ST", then the empty finish chunk
    assert last[-1].choices[0].finish_reason == "length" and last[-1].usage is None  # no usage unless asked
    assert builder.result().choices[0].message.content == "go ST"


def test_an_unknown_finish_reason_is_stop_and_the_shapes_encode_as_openai_does() -> None:
    builder = CompletionBuilder("m")
    builder.add("Hi")
    (last,) = builder.finish(None, 0, 1)
    encoded = msgspec.json.decode(msgspec.json.encode(last))
    assert encoded["object"] == "chat.completion.chunk" and encoded["choices"][0]["finish_reason"] == "stop"
    assert encoded["choices"][0]["delta"] == {}
    assert msgspec.json.decode(msgspec.json.encode(builder.result()))["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 1,
        "total_tokens": 1,
    }
