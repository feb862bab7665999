"""format_prompt and message validation (docs/protocol.md section 1)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from h2ochat import format_prompt


def test_one_message_is_sent_unchanged() -> None:
    assert format_prompt([{"role": "user", "content": "  Hi\nthere "}]) == "  Hi\nthere "


def test_several_messages_become_role_lines_ending_with_assistant() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    before = copy.deepcopy(messages)
    assert format_prompt(messages) == "System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: Bye\nAssistant:"
    assert messages == before


@pytest.mark.parametrize(
    ("messages", "complaint"),
    [
        ("hello", "must be a list"),
        ({"role": "user", "content": "x"}, "must be a list"),
        ([], "empty"),
        ([{"role": "user"}], r"messages\[0\] has no 'content'"),
        ([{"role": "user", "content": "a"}, {"content": "b"}], r"messages\[1\] has no 'role'"),
        ([{"role": "user", "content": None}], r"messages\[0\]\['content'\] must be a string"),
        (["hi"], r"messages\[0\] must be a dict"),
        ([{"role": " ", "content": "x"}], "empty role"),
    ],
)
def test_bad_messages_name_the_offending_item(messages: Any, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        format_prompt(messages)
