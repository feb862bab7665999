"""The real commands, run as a user runs them: subprocesses, a pseudo-terminal for chat."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.helpers import events

H2OCHAT = [sys.executable, "-m", "h2ochat"]
PROMPT = r"\x1b\[0m>"  # prompt_toolkit draws "> " as ">" then moves the cursor


def h2ochat(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 120):
    environment = {k: v for k, v in os.environ.items() if k != "H2OCHAT_URL"}
    return subprocess.run(
        [*H2OCHAT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environment, **(env or {})},
    )


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``h2ochat serve`` on a free port with the embedded model: (url, process)."""
    process = subprocess.Popen(
        [*H2OCHAT, "serve", "--port", "0", "--db", str(tmp_path / "served.db")],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    url = None
    for line in process.stderr:
        match = re.search(r"serving (http://\S+)", line)
        if match:
            url = match.group(1)
            break
    assert url, "serve did not print its URL"
    # Keep reading its log, or the server would block once the pipe is full.
    drain = threading.Thread(target=process.stderr.read, daemon=True)
    drain.start()
    yield url, process
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    drain.join(timeout=5)
    process.stderr.close()


@pytest.mark.model
def test_ask_uses_the_embedded_model_when_no_server_is_configured() -> None:
    result = h2ochat("ask", "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "Using the embedded model HuggingFaceTB/SmolLM2-135M-Instruct" in result.stderr
    assert "--url" in result.stderr


@pytest.mark.model
def test_ask_reads_stdin_and_the_command_name_is_optional() -> None:
    result = h2ochat(stdin="What is the capital of France?\n")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.model
def test_ask_json() -> None:
    result = h2ochat("ask", "--json", "-p", "max_new_tokens=4", "Write a story.")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["finish_reason"] == "length" and answer["generated_tokens"] == 4
    assert answer["text"] and answer["seconds_total"] >= answer["seconds_to_first_token"] > 0
    assert "embedded" not in result.stderr  # --json keeps stderr quiet too


@pytest.mark.model
def test_ask_against_a_running_serve(served: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = served
    result = h2ochat("ask", "--url", url, "--no-stream", "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout and "embedded" not in result.stderr
    via_env = h2ochat("models", "--json", env={"H2OCHAT_URL": url})
    assert json.loads(via_env.stdout)[0]["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    table = h2ochat("models", "--url", url)
    assert "SmolLM2" in table.stdout


@pytest.mark.model
def test_serve_sigterm_ends_open_streams_with_an_error_event(served: tuple[str, subprocess.Popen[str]]) -> None:
    import asyncio

    import aiohttp

    url, process = served

    async def stream_then_terminate() -> bytes:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await http.post(f"{url}/settings", data={"ethicsModalAccepted": "true"}, headers={"Referer": url + "/"})
            async with http.post(f"{url}/conversation", json={"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}) as r:
                conversation = (await r.json())["conversationId"]
            body = {
                "inputs": "Write a very long story about a dragon.",
                "parameters": {"max_new_tokens": 2000, "do_sample": False},
                "options": {
                    "id": "8d0a2c1e-7d8c-4f7e-9d3b-1b2c3d4e5f60",
                    "response_id": "0f1e2d3c-4b5a-4968-8776-655443322110",
                },
            }
            async with http.post(f"{url}/conversation/{conversation}", json=body) as response:
                await response.content.readuntil(b"\n\n")
                process.send_signal(signal.SIGTERM)
                return await response.read()

    started = time.monotonic()
    raw = asyncio.run(stream_then_terminate())
    assert process.wait(timeout=20) == 0
    assert time.monotonic() - started < 20
    assert events(raw)[-1] == {
        "error": "generation stopped: the server is shutting down",
        "error_type": "incomplete_generation",
    }


def test_errors_are_one_line_with_exit_codes() -> None:
    refused = h2ochat("ask", "--url", "http://127.0.0.1:9", "Hi")
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: could not connect") and len(refused.stderr.strip().splitlines()) <= 2
    assert "Traceback" not in refused.stderr
    usage = h2ochat("ask", "-p", "oops", "Hi")
    assert usage.returncode == 2 and "key=value" in usage.stderr
    deep = h2ochat("ask", "-p", "stop=" + "[" * 5000 + "]" * 5000, "Hi")  # a RecursionError before 3.13
    assert deep.returncode == 2 and "nested more than 128 levels" in deep.stderr and "Traceback" not in deep.stderr
    empty = h2ochat("ask", stdin="")
    assert empty.returncode == 2
    debug = h2ochat("ask", "--debug", "--url", "http://127.0.0.1:9", "Hi")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


@pytest.mark.model
def test_refused_parameters_are_explained() -> None:
    result = h2ochat("ask", "-p", "temperature=0", "Hi")
    assert result.returncode == 1
    assert "parameters.temperature" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [[], ["ask"], ["chat"], ["serve"], ["models"]])
def test_help_and_version(command: list[str]) -> None:
    result = h2ochat(*command, "--help")
    assert result.returncode == 0 and "Examples:" in result.stdout
    assert h2ochat("--version").stdout.startswith("h2ochat, version ")


@pytest.mark.model
def test_chat_in_a_terminal(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm"}
    env.pop("H2OCHAT_URL", None)
    child = pexpect.spawn(
        sys.executable, ["-m", "h2ochat", "chat"], env=env, encoding="utf-8", timeout=60, dimensions=(40, 120)
    )
    try:
        child.expect("Chatting with")
        child.expect(PROMPT)
        child.sendline("What is the capital of France?")
        child.expect("Paris")
        child.expect(PROMPT)
        child.sendline("/new")
        child.expect("New conversation")
        child.expect(PROMPT)
        child.sendline("Write a very long story about a dragon.")
        child.expect("Thinking")
        child.expect(r"\b[Tt]he\b", timeout=60)  # the story has begun streaming (it takes about 10 s)
        child.sendintr()
        child.expect("stopped")
        child.expect(PROMPT)
        transcript = tmp_path / "chat.json"
        child.sendline(f"/save {transcript}")
        child.expect("Saved")
        child.expect(PROMPT)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    saved = json.loads(transcript.read_text())
    assert [m["role"] for m in saved] == ["user", "assistant"]  # /new dropped the first exchange
    assert saved[0]["content"] == "Write a very long story about a dragon."
    assert (tmp_path / "h2ochat" / "chat_history").read_text().count("capital of France") == 1
