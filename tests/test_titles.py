"""Titles as the sidebar shows them: what small models wrap around a title is taken off (issue 26)."""

from __future__ import annotations

import pytest

from h2ochat.server.inference.titles import MAX_TITLE, clean_title, title_from_message


@pytest.mark.parametrize(
    ("written", "title"),
    [
        ("Here's a possible title: **Paris, France**", "Paris, France"),
        ('"The Capital of France"', "The Capital of France"),
        ("Title: Sea poems\nLet me know if you want another.", "Sea poems"),
        ("Sure! Here is a title: A trip to the sea", "A trip to the sea"),
        ("# Capital of France.", "Capital of France"),
        ("\u201cQuoted\u201d", "Quoted"),
        ("A suggested title for this conversation: Rivers", "Rivers"),
        ("", ""),
    ],
)
def test_a_model_s_title_is_cleaned(written: str, title: str) -> None:
    assert clean_title(written) == title


def test_a_long_title_is_cut_at_a_word() -> None:
    title = clean_title("A very long title that goes on and on about many things beyond sixty characters")
    assert len(title) <= MAX_TITLE and title.endswith("things…")


def test_a_title_from_the_person_s_message() -> None:
    assert title_from_message("What is the **capital** of France?") == "What is the capital of France?"
    assert title_from_message("   ") == "New Chat"
    assert len(title_from_message("word " * 100)) <= MAX_TITLE
