"""Error answers become short, typed, informative exceptions."""

from __future__ import annotations

import email.utils

import pytest

from h2ochat.protocol.errors import (
    ConversationNotFound,
    GenerationError,
    IncompleteGeneration,
    InputValidationError,
    RateLimited,
    ServerError,
    body_excerpt,
    error_for_event,
    error_for_status,
    parse_retry_after,
)


def test_json_text_and_html_bodies_are_summarised() -> None:
    assert body_excerpt(b'{"message": "Conversation not found"}', "application/json") == "Conversation not found"
    assert body_excerpt(b'{"error": "You need to accept the welcome modal first"}') == (
        "You need to accept the welcome modal first"
    )
    html = b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"
    assert body_excerpt(html, "text/html") == "502 Bad Gateway"
    assert body_excerpt(b"<p>oops &amp; more</p>", "text/html") == "oops & more"
    assert body_excerpt(b"plain\n  failure", "text/plain") == "plain failure"
    assert body_excerpt(b"") == "(empty body)"
    assert len(body_excerpt(b"x" * 10_000)) == 200


def test_status_errors_carry_step_status_url_and_excerpt() -> None:
    error = error_for_status("conversation", 503, "http://h/conversation", b"busy", "text/plain")
    assert isinstance(error, ServerError)
    assert (error.step, error.status, error.url, error.body) == ("conversation", 503, "http://h/conversation", "busy")
    assert str(error) == "conversation step failed: HTTP 503 from http://h/conversation: busy"


def test_404_is_conversation_not_found_only_for_conversation_steps() -> None:
    assert isinstance(error_for_status("message", 404, "u", b"{}"), ConversationNotFound)
    assert not isinstance(error_for_status("settings", 404, "u", b"{}"), ConversationNotFound)


def test_429_carries_retry_after_in_both_forms() -> None:
    error = error_for_status("settings", 429, "u", b"", retry_after="7")
    assert isinstance(error, RateLimited) and error.retry_after == 7
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30)
    assert parse_retry_after("soon") is None
    assert error_for_status("settings", 429, "u", b"").retry_after is None  # type: ignore[attr-defined]


def test_in_stream_errors_map_to_their_error_type() -> None:
    assert isinstance(error_for_event("bad", "validation"), InputValidationError)
    assert isinstance(error_for_event("cut", "incomplete_generation", "part"), IncompleteGeneration)
    unknown = error_for_event("odd", "martian")
    assert type(unknown) is GenerationError and "odd" in str(unknown)
    assert isinstance(unknown, TimeoutError) is False
