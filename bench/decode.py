"""Benchmark 1: the cost of turning raw TGI event bytes into token texts, in process.

Every decoder gets the same chunks (one event per read, then 64 KiB per
read) and must return exactly the token texts the stream holds before it is
timed.  The comparisons reproduce each library's own parsing path over
in-memory bytes, calling its real classes:

- ``naive``: what the original gpt4free provider did on top of aiohttp: lines
  split on LF, ``startswith(b"data:")``, ``json.loads``, dict look-ups.
- ``text-generation``: HuggingFace's TGI client (``Client.generate_stream``):
  requests' ``iter_lines``, strip ``data:``, ``json.loads``, then the pydantic
  ``StreamResponse(**payload)``.
- ``openai``: the OpenAI SDK's ``SSEDecoder.iter_bytes`` and ``sse.json()``,
  as its ``Stream`` does.
- ``httpx-sse``: httpx's text decoder, httpx-sse's line decoder and
  ``SSEDecoder``, then ``json.loads``, as ``EventSource.iter_sse`` does.

The libraries of the comparisons come with ``pip install 'h2ochat[bench]'``;
any that is missing is skipped and named in the notes.

Beside them, in the same repeats, h2ochat's decoder of current chat-ui's
answer stream (``ChatUIStreamDecoder``) reads the same answer in that form
(``corpus.chatui_lines``: NUL-padded tokens, a keep-alive after every fifth,
the 4096 spaces). Its first row is per update (a line, as a TGI event is one
read of the other stream); the second is the same time per token, since that
stream carries a keep-alive line for every five tokens.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator
from typing import Any

from bench.common import Section, Target, timed
from bench.corpus import Stream, chatui_lines, chunked, make_stream
from h2ochat.protocol.chatui import ChatUIStreamDecoder, StreamUpdate
from h2ochat.protocol.tgi import TGIStreamDecoder

__all__ = ["DECODERS", "NDJSON", "NDJSON_PER_TOKEN", "Decoder", "available", "run"]

Decoder = Callable[[list[bytes]], list[str]]
OURS = "h2ochat"
NDJSON = "h2ochat, chat-ui NDJSON"
NDJSON_PER_TOKEN = "h2ochat, chat-ui NDJSON, per token"
TARGET_US = 1.5
# "Equally fast as the TGI decoder" (issue 21), with room for the run-to-run noise of a shared machine.
NDJSON_TARGET_RATIO = 1.1
CHUNKINGS: dict[str, int | None] = {"one event per read": None, "64 KiB per read": 64 * 1024}


def h2ochat(chunks: list[bytes]) -> list[str]:
    """The decoding loop of ``H2oSession.call``, without the network."""
    decoder = TGIStreamDecoder()
    texts: list[str] = []
    for chunk in chunks:
        for event in decoder.decode(chunk):
            token = event.token
            if token is not None and not token.special:
                texts.append(token.text)
    return texts


def h2ochat_ndjson(chunks: list[bytes]) -> list[str]:
    """The same loop over current chat-ui's stream: the token of each ``stream`` update."""
    decoder = ChatUIStreamDecoder()
    texts: list[str] = []
    append = texts.append
    for chunk in chunks:
        for update in decoder.decode(chunk):
            if type(update) is StreamUpdate:
                append(update.token)
    for update in decoder.flush():
        if type(update) is StreamUpdate:
            append(update.token)
    return texts


def naive(chunks: list[bytes]) -> list[str]:
    """The original provider: ``async for line in response.content`` and json.loads per line."""
    texts: list[str] = []
    for line in _lf_lines(chunks):
        if line and line.startswith(b"data:"):
            payload = json.loads(line[5:-1])
            if not payload["token"]["special"]:
                texts.append(payload["token"]["text"])
    return texts


def _lf_lines(chunks: list[bytes]) -> Iterator[bytes]:
    """Lines as aiohttp's ``StreamReader`` iteration yields them: split on LF, LF kept."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            yield buffer[start : end + 1]
            start = end + 1
        buffer = buffer[start:]


def text_generation(chunks: list[bytes]) -> list[str]:
    """``text_generation.Client.generate_stream`` after its request: requests' lines, pydantic."""
    from text_generation.types import StreamResponse

    texts: list[str] = []
    for byte_payload in _requests_response(chunks).iter_lines():
        # The client's own steps, in its order (its "/n" is a typo it ships with).
        if byte_payload == b"\n":
            continue
        payload = byte_payload.decode("utf-8")
        if payload.startswith("data:"):
            json_payload = json.loads(payload.lstrip("data:").rstrip("/n"))  # noqa: B005 - as the client does
            response = StreamResponse(**json_payload)
            if not response.token.special:
                texts.append(response.token.text)
    return texts


class _Raw:
    """Stands in for urllib3's response: requests reads a streamed body through ``stream()``."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def stream(self, chunk_size: int, decode_content: bool = True) -> Iterator[bytes]:
        return iter(self._chunks)


def _requests_response(chunks: list[bytes]) -> Any:
    import requests

    response = requests.Response()
    response.status_code = 200
    response.raw = _Raw(chunks)
    return response


def openai(chunks: list[bytes]) -> list[str]:
    """The OpenAI SDK's ``Stream.__stream__``: its SSE decoder, the [DONE] check, ``sse.json()``."""
    from openai._streaming import SSEDecoder

    texts: list[str] = []
    for sse in SSEDecoder().iter_bytes(iter(chunks)):
        if sse.data.startswith("[DONE]"):
            break
        data = sse.json()
        if not data["token"]["special"]:
            texts.append(data["token"]["text"])
    return texts


def httpx_sse(chunks: list[bytes]) -> list[str]:
    """``EventSource.iter_sse``: httpx's incremental text decoding, then httpx-sse's decoders."""
    from httpx._decoders import TextDecoder
    from httpx_sse._decoders import SSEDecoder, SSELineDecoder

    text_decoder = TextDecoder(encoding="utf-8")
    lines = SSELineDecoder()
    decoder = SSEDecoder()
    texts: list[str] = []

    def handle(line: str) -> None:
        sse = decoder.decode(line.rstrip("\n"))
        if sse is not None:
            data = json.loads(sse.data)
            if not data["token"]["special"]:
                texts.append(data["token"]["text"])

    for chunk in chunks:
        for line in lines.decode(text_decoder.decode(chunk)):
            handle(line)
    tail = text_decoder.flush()
    for line in [*(lines.decode(tail) if tail else []), *lines.flush()]:
        handle(line)
    return texts


DECODERS: dict[str, tuple[Decoder, str | None]] = {
    # name: (function, the module it needs beyond h2ochat's own dependencies)
    OURS: (h2ochat, None),
    "naive (original provider)": (naive, None),
    "text-generation (HF)": (text_generation, "text_generation"),
    "openai SDK": (openai, "openai"),
    "httpx-sse": (httpx_sse, "httpx_sse"),
}


def available() -> tuple[dict[str, Decoder], list[str]]:
    """The decoders whose libraries are installed, and the names of those skipped."""
    import importlib.util

    found: dict[str, Decoder] = {}
    missing: list[str] = []
    for name, (function, module) in DECODERS.items():
        if module is None or importlib.util.find_spec(module) is not None:
            found[name] = function
        else:
            missing.append(name)
    return found, missing


def run(*, events: int = 100_000, repeats: int = 5) -> Section:
    section = Section(
        "decode",
        f"1. Decoding cost per event ({events:,} TGI events, in process, no network)",
        "x faster (h2ochat)",
        parameters={"events": events, "repeats": repeats, "chunkings": list(CHUNKINGS)},
    )
    stream = make_stream(events)
    lines = chatui_lines(stream)
    decoders, missing = available()
    if missing:
        section.notes.append(f"skipped (not installed; pip install 'h2ochat[bench]'): {', '.join(missing)}")
    for case, size in CHUNKINGS.items():
        runs = {name: (decode, chunked(stream, size), events) for name, decode in decoders.items()}
        runs[NDJSON] = (h2ochat_ndjson, chunked(lines, size), len(lines))
        _verify(runs, stream, case)
        cpu, wall = _measure(runs, repeats)
        for name in runs:
            wall_median = statistics.median(wall[name])
            unit = "CPU µs/update" if name == NDJSON else "CPU µs/event"
            section.add(case, name, cpu[name], unit, note=f"wall clock: {wall_median:.3f} µs")
        per_token = [sample * len(lines) / events for sample in cpu[NDJSON]]
        section.add(case, NDJSON_PER_TOKEN, per_token, "CPU µs/token", note="the NDJSON row's time over the tokens")
        section.compare(case, OURS, higher_is_better=False)
        section.notes.append(f"wall-clock median, h2ochat, {case}: {statistics.median(wall[OURS]):.2f} µs/event")
    section.targets += _targets(section)
    section.notes.append(
        "CPU time of the decoding thread per event (the wall clock grows with the machine's load; both are in the "
        "JSON). Each repeat runs every decoder once, in turn; the garbage collector stays on, as in a real client."
    )
    section.notes.append(
        f"{NDJSON}: the same {events:,} tokens as current chat-ui streams them ({len(lines):,} lines: a keep-alive "
        "after every fifth token, padding, 4096 spaces); per update (line) and per token; its ratio is its time "
        "over the TGI decoder's per event (below 1: faster)."
    )
    return section


Run = tuple[Decoder, list[bytes], int]  # the decoder, its reads, what one figure is per (events, lines)


def _verify(runs: dict[str, Run], stream: Stream, case: str) -> None:
    for name, (decode, chunks, _) in runs.items():
        texts = decode(chunks)
        if texts != stream.texts:
            raise AssertionError(f"{name} decoded {case} into different token texts; its figures would mean nothing")


def _measure(runs: dict[str, Run], repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """CPU and wall-clock microseconds per event (or update), per decoder and repeat.

    The CPU time of this thread is the figure compared: it is what decoding
    costs, and unlike the wall clock it does not grow while other processes
    on a busy machine hold the core.
    """
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    wall: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (decode, chunks, per) in runs.items():
            with timed() as timer:
                decode(chunks)
            cpu[name].append(timer.cpu / per * 1e6)
            wall[name].append(timer.wall / per * 1e6)
    return cpu, wall


def _targets(section: Section) -> list[Target]:
    targets = []
    for case in CHUNKINGS:
        ours = section.row(case, OURS).stats.median
        targets.append(
            Target(
                f"h2ochat ≤ {TARGET_US} CPU µs/event ({case})",
                ours <= TARGET_US,
                f"{ours:.2f} µs/event, {TARGET_US / ours:.2f}x within the target"
                if ours <= TARGET_US
                else f"{ours:.2f} µs/event, {ours / TARGET_US:.2f}x over the target",
            )
        )
        others = [row for row in section.rows if row.case == case and row.name not in (OURS, NDJSON, NDJSON_PER_TOKEN)]
        if others:
            slowest_margin = min(others, key=lambda row: row.ratio or 0.0)
            targets.append(
                Target(
                    f"h2ochat faster than every comparison ({case})",
                    all((row.ratio or 0) > 1 for row in others),
                    f"closest: {slowest_margin.name}, h2ochat {slowest_margin.ratio:.2f}x faster",
                )
            )
        ndjson, per_token = section.row(case, NDJSON), section.row(case, NDJSON_PER_TOKEN)
        ratio = ndjson.ratio or 0.0
        targets.append(
            Target(
                f"chat-ui NDJSON decoder per update as fast as TGI per event, ≤ {NDJSON_TARGET_RATIO}x ({case})",
                0 < ratio <= NDJSON_TARGET_RATIO,
                f"{ndjson.stats.median:.2f} µs/update, {ratio:.2f}x the TGI decoder's time per event "
                f"(per token {per_token.stats.median:.2f} µs, {per_token.ratio or 0:.2f}x)",
            )
        )
    return targets
