"""The named client faults, each with the exact outcome the client owes.

Every case says which exception (or a normal answer) must come out, what its
message must say, and what ``partial_text`` or ``retry_after`` it carries.
The pytest suite runs each once; ``python -m reliability`` prints them as a
table with the time each took to surface.
"""

from __future__ import annotations

import asyncio
import email.utils
import time

from h2ochat import (
    ConnectError,
    ConnectTimeout,
    EventTooLarge,
    FirstTokenTimeout,
    GenerationError,
    HTTPStatusError,
    IncompleteStream,
    InputValidationError,
    MalformedEvent,
    ModelOverloaded,
    ProtocolError,
    ProxyError,
    RateLimited,
    ReadError,
    ReadTimeout,
    ServerError,
    Timeout,
)
from h2ochat.protocol.sse import encode_event
from h2ochat.protocol.tgi import Token, encode_error_event, encode_stream_event
from reliability.faults import SHORT, Case
from reliability.faultserver import Fault, answer_events, bytes_before_event, http_response, stream_response

__all__ = ["ERROR_BODIES", "catalogue", "status_fault", "token"]

# One error body per format, and the excerpt the client's message must quote.
ERROR_BODIES = {
    "json": (b'{"message": "kaput: the model crashed"}', "application/json", "kaput: the model crashed"),
    "text": (b"backend exploded\n", "text/plain", "backend exploded"),
    "html": (
        b"<html><head><title>Bad Gateway Page</title></head><body><h1>nginx</h1></body></html>",
        "text/html",
        "Bad Gateway Page",
    ),
    # Past the protocol's nesting limit (protocol/nesting.py) and, before Python 3.13, past json's recursion limit.
    "nested-json": (b"[" * 5000 + b"]" * 5000, "application/json", r"HTTP \d+"),
    "empty": (b"", "application/json", r"\(empty body\)"),
}
THREE = answer_events("Hello", " world", "!")
# For stalls that must be outlived: the steps before and after them must then succeed, so longer
# limits than SHORT, lest a busy machine turn a slow (not stalled) answer into a timeout.
PATIENT = Timeout(2.0)


def token(text: str) -> bytes:
    return encode_stream_event(Token(id=1, text=text, logprob=-0.5))


def status_fault(
    step: str, status: int, body: str = "json", headers: dict[str, str] | None = None, times: int = 1
) -> Fault:
    raw, content_type, _ = ERROR_BODIES[body]
    return Fault(step, "replace", response=http_response(status, raw, content_type, headers), times=times)


def catalogue() -> list[Case]:
    """Every named case, built now (HTTP dates are relative to the current time)."""
    return [
        *_connection_cases(),
        *_stall_cases(),
        *_status_cases(),
        *_content_cases(),
        *_tls_and_proxy_cases(),
        *_caller_cases(),
    ]


def _connection_cases() -> list[Case]:
    mid = bytes_before_event(THREE, 2)
    return [
        Case("normal answer (control)", "control", text="Hello world"),
        Case("connection refused", "refused", env="refused", expect=(ConnectError,), match="could not connect"),
        Case("connection refused, 2 retries", "refused", env="refused", max_retries=2, expect=(ConnectError,)),
        *[
            Case(f"reset before headers: {step}", "reset", [Fault(step, "reset")], expect=(ReadError,))
            for step in ("settings", "conversation", "message")
        ],
        # aiohttp itself sends an idempotent DELETE again when a reused connection breaks: one reset is absorbed.
        Case("reset before headers: delete (once)", "reset", [Fault("delete", "reset")], text="Hello world"),
        Case(
            "reset before headers: delete (twice)",
            "reset",
            [Fault("delete", "reset", times=2)],
            warns=True,
            text="Hello world",
        ),
        Case("reset before headers, retried", "reset", [Fault("conversation", "reset")], max_retries=1),
        Case("reset inside the headers: message", "reset", [Fault("message", "reset", offset=20)], expect=(ReadError,)),
        Case(
            "reset mid-stream (after 2 events)",
            "reset",
            [Fault("message", "reset", offset=mid)],
            events=THREE,
            expect=(ReadError,),
            match="connection broke",
            partial="Hello world",
        ),
        Case(
            "FIN inside a chunk mid-stream",
            "reset",
            [Fault("message", "close", offset=mid + 9)],
            events=THREE,
            expect=(ReadError,),
            partial="Hello world",
        ),
        Case(
            "stream ends cleanly before its final event",
            "reset",
            events=THREE[:2],
            expect=(IncompleteStream,),
            match="ended before its final event",
            partial="Hello world",
        ),
    ]


def _stall_cases() -> list[Case]:
    mid = bytes_before_event(THREE, 2)
    return [
        Case(
            "stall before first byte: settings",
            "stall",
            [Fault("settings", "stall")],
            expect=(ReadTimeout,),
            timeout=SHORT,
        ),
        Case(
            "stall before first byte: conversation",
            "stall",
            [Fault("conversation", "stall")],
            expect=(ReadTimeout,),
            timeout=SHORT,
        ),
        Case(
            "stall before first byte: message",
            "stall",
            [Fault("message", "stall")],
            expect=(FirstTokenTimeout,),
            match="first-token limit",
            timeout=SHORT,
        ),
        Case(
            "stall inside the headers: message",
            "stall",
            [Fault("message", "stall", offset=30)],
            expect=(FirstTokenTimeout,),
            timeout=SHORT,
        ),
        Case(
            "stall before first byte: delete",
            "stall",
            [Fault("delete", "stall")],
            warns=True,
            text="Hello world",
            timeout=PATIENT,
        ),
        Case(
            "stall between events",
            "stall",
            [Fault("message", "stall", offset=mid)],
            events=THREE,
            expect=(ReadTimeout,),
            match="read limit",
            timeout=SHORT,
            partial="Hello world",
        ),
        Case(
            "stall on settings, retried",
            "stall",
            [Fault("settings", "stall")],
            max_retries=1,
            text="Hello world",
            timeout=PATIENT,
        ),
    ]


def _status_cases() -> list[Case]:
    in_two_minutes = email.utils.formatdate(time.time() + 120, usegmt=True)
    cases = [
        Case("429 without Retry-After", "429", [status_fault("message", 429)], expect=(RateLimited,), retry_after=None),
        Case(
            "429 Retry-After: 7 (seconds)",
            "429",
            [status_fault("message", 429, headers={"Retry-After": "7"})],
            expect=(RateLimited,),
            retry_after=7.0,
            match="rate limited",
        ),
        Case(
            "429 Retry-After: HTTP date in 2 min",
            "429",
            [status_fault("message", 429, headers={"Retry-After": in_two_minutes})],
            expect=(RateLimited,),
            retry_after=(100.0, 121.0),
        ),
        Case(
            "429 Retry-After: not a number",
            "429",
            [status_fault("message", 429, headers={"Retry-After": "\u00b2"})],
            expect=(RateLimited,),
            retry_after=None,
        ),
        Case(
            "429 on settings, Retry-After: 0, retried",
            "429",
            [status_fault("settings", 429, headers={"Retry-After": "0"})],
            max_retries=1,
            text="Hello world",
        ),
        Case(
            "429 on conversation, retries exhausted",
            "429",
            [status_fault("conversation", 429, headers={"Retry-After": "0"}, times=2)],
            max_retries=1,
            expect=(RateLimited,),
            retry_after=0.0,
        ),
    ]
    for status in (500, 502, 503, 504):
        for body in ("json", "text", "html"):
            cases.append(
                Case(
                    f"{status} with a {body} body: message",
                    "5xx",
                    [status_fault("message", status, body)],
                    expect=(ServerError,),
                    match=f"message step failed: HTTP {status} .*{ERROR_BODIES[body][2]}",
                )
            )
    cases += [
        Case(
            "503 with deeply nested JSON", "5xx", [status_fault("message", 503, "nested-json")], expect=(ServerError,)
        ),
        Case("500 with an empty body", "5xx", [status_fault("message", 500, "empty")], expect=(ServerError,)),
        Case(
            "502 on conversation, retries exhausted",
            "5xx",
            [status_fault("conversation", 502, "html", times=3)],
            max_retries=2,
            expect=(ServerError,),
            match="conversation step failed: HTTP 502",
        ),
    ]
    return cases


def _content_cases() -> list[Case]:
    html_page = http_response(200, b"<html><title>Log in</title></html>", "text/html")
    return [
        Case(
            "200 text/html instead of a stream",
            "content type",
            [Fault("message", "replace", response=html_page)],
            expect=(ProtocolError,),
            match="text/html instead of an event stream",
        ),
        Case(
            "200 application/json instead of a stream",
            "content type",
            [Fault("message", "replace", response=http_response(200, b'{"generated_text": "x"}'))],
            expect=(ProtocolError,),
            match="application/json instead of an event stream",
        ),
        Case(
            "event stream labelled text/plain",
            "content type",
            [Fault("message", "replace", response=stream_response(THREE, content_type="text/plain"))],
            expect=(ProtocolError,),
        ),
        Case(
            "200 HTML instead of a conversation id",
            "content type",
            [Fault("conversation", "replace", response=html_page)],
            expect=(ProtocolError,),
            match="without a conversationId",
        ),
        Case(
            "conversation id with invalid UTF-8",
            "content type",
            [Fault("conversation", "replace", response=http_response(200, b'{"conversationId": "\xff\xfe"}'))],
            expect=(ProtocolError,),
            match="without a conversationId",
        ),
        Case(
            "conversation answer nested 5000 deep",
            "content type",
            [Fault("conversation", "replace", response=http_response(200, b'{"conversationId": ' + b"[" * 5000))],
            expect=(ProtocolError,),
        ),
        Case(
            "malformed JSON in event 2",
            "bad event",
            events=[token("Hello"), b"data:{broken\n\n", *THREE[2:]],
            expect=(MalformedEvent,),
            partial="Hello",
        ),
        Case(
            "JSON of the wrong shape in event 1",
            "bad event",
            events=[b"data:[1, 2]\n\n", *THREE],
            expect=(MalformedEvent,),
            partial="",
        ),
        Case(
            "event over the size limit",
            "bad event",
            events=[token("Hello"), encode_event("x" * 10_000), *THREE[1:]],
            expect=(EventTooLarge,),
            match="4096 bytes",
            partial="Hello",
        ),
        Case(
            "no blank line ever (endless event)",
            "bad event",
            events=[token("Hello"), b"data:" + b"x" * 3000, b"y" * 3000],
            expect=(EventTooLarge,),
            partial="Hello",
        ),
        Case(
            "error event: overloaded",
            "error event",
            events=[token("Hello"), encode_error_event("Model is overloaded", "overloaded")],
            expect=(ModelOverloaded,),
            match="Model is overloaded",
            partial="Hello",
        ),
        Case(
            "error event: validation",
            "error event",
            events=[encode_error_event("Input too long", "validation")],
            expect=(InputValidationError,),
            partial="",
        ),
        Case(
            "error event: unknown error_type",
            "error event",
            events=[encode_error_event("odd", "cosmic-rays")],
            expect=(GenerationError,),
            match="cosmic-rays",
        ),
    ]


def _tls_and_proxy_cases() -> list[Case]:
    return [
        Case(
            "https:// URL, plain-HTTP server",
            "tls",
            env="https-to-plain",
            expect=(ConnectError,),
            match="TLS failed.*WRONG_VERSION_NUMBER|TLS failed",
        ),
        Case(
            "self-signed certificate",
            "tls",
            env="tls",
            expect=(ConnectError,),
            match="TLS failed.*certificate verify failed",
        ),
        Case("HTTP proxy tunnels (control)", "proxy", env="http-proxy:tunnel", text="Hello world"),
        Case("SOCKS5 proxy tunnels (control)", "proxy", env="socks:tunnel", text="Hello world"),
        Case(
            "HTTP proxy answers 407 (forwarding)",
            "proxy",
            env="http-proxy:auth",
            expect=(ProxyError,),
            match="407",
        ),
        Case("HTTP proxy answers 407 to CONNECT", "proxy", env="connect-proxy:auth", expect=(ProxyError,), match="407"),
        Case(
            "HTTP proxy answers 403 to CONNECT", "proxy", env="connect-proxy:forbid", expect=(ProxyError,), match="403"
        ),
        Case(
            "HTTP proxy answers 403 (forwarding)",
            "proxy",
            env="http-proxy:forbid",
            expect=(HTTPStatusError,),
            match="HTTP 403",
        ),
        Case("SOCKS5 proxy refuses the connection", "proxy", env="socks:refuse", expect=(ProxyError,)),
        Case("SOCKS5 proxy wants authentication", "proxy", env="socks:auth", expect=(ProxyError,)),
        Case("SOCKS5 proxy never answers", "proxy", env="socks:stall", expect=(ConnectTimeout,), timeout=SHORT),
        Case(
            "HTTP proxy never answers CONNECT",
            "proxy",
            env="connect-proxy:stall",
            expect=(ConnectTimeout,),
            match="timed out connecting through the proxy",
            timeout=SHORT,
        ),
        Case(
            "HTTP proxy never answers (forwarding)",
            "proxy",
            env="http-proxy:stall",
            expect=(ReadTimeout,),
            match="timed out waiting for the server through the proxy",
            timeout=SHORT,
        ),
        Case("nothing listens at the proxy's port", "proxy", env="proxy-refused", expect=(ProxyError,)),
    ]


def _caller_cases() -> list[Case]:
    return [
        Case(
            "caller cancels mid-stream",
            "cancel",
            [Fault("message", "stall", offset=bytes_before_event(THREE, 1))],
            events=THREE,
            cancel_after=0.3,
            expect=(asyncio.CancelledError,),
        ),
        Case(
            "caller cancels during settings",
            "cancel",
            [Fault("settings", "stall")],
            cancel_after=0.2,
            expect=(asyncio.CancelledError,),
        ),
        Case(
            "caller cancels twice while the delete stalls",
            "cancel",
            [Fault("delete", "stall", before=True)],
            max_retries=1,
            timeout=Timeout(read=1.0),
            cancel_after=0.1,
            cancel_again_after=0.2,
            expect=(asyncio.CancelledError,),
            must_delete=True,
        ),
        Case("caller breaks after the first token", "cancel", events=THREE, break_early=True, text="Hello"),
        Case(
            "reused session: reset mid-stream",
            "session",
            [Fault("message", "reset", offset=bytes_before_event(THREE, 2))],
            events=THREE,
            session=True,
            expect=(ReadError,),
        ),
        Case("reused session: normal answer", "session", session=True, text="Hello world"),
    ]
