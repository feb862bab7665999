"""The command line and the server's models: chat's /model and /models, --model shell completion."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from h2ochat.server import RunningServer, start_server
from tests.helpers import FIXED_MODEL, fixed_config

H2OCHAT = [sys.executable, "-m", "h2ochat"]


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with start_server(fixed_config(echo=True)) as running:
        yield running


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("H2OCHAT_")}
    return {**env, **extra}


async def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [*H2OCHAT, *args]
    return await asyncio.to_thread(
        subprocess.run, command, input=stdin, capture_output=True, text=True, timeout=60, env=env or environment()
    )


async def test_chat_checks_a_model_name_at_once_and_lists_the_models(server: RunningServer) -> None:
    lines = ["/models", "/model nope", "/model " + FIXED_MODEL, "echo this", "/exit"]
    result = await run("chat", "--url", server.url, stdin="\n".join(lines) + "\n", env=environment(COLUMNS="200"))
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert f"Unknown model 'nope'. This server offers: {FIXED_MODEL}" in out
    assert f"Model: {FIXED_MODEL}" in out and "echo this" in out.split(f"Model: {FIXED_MODEL}")[1]


async def test_model_completion_offers_the_servers_models(server: RunningServer) -> None:
    env = environment(_H2OCHAT_COMPLETE="bash_complete", COMP_WORDS=f"h2ochat ask --url {server.url} --model te")
    result = await run(env={**env, "COMP_CWORD": "5"})
    assert result.stdout.split() == [f"plain,{FIXED_MODEL}"], result.stderr
    # H2OCHAT_URL works as --url does; an unreachable server completes nothing, without an error.
    via_env = environment(_H2OCHAT_COMPLETE="bash_complete", COMP_WORDS="h2ochat chat -m ", COMP_CWORD="3")
    assert (await run(env={**via_env, "H2OCHAT_URL": server.url})).stdout.split() == [f"plain,{FIXED_MODEL}"]
    nothing = await run(env={**via_env, "H2OCHAT_URL": "http://127.0.0.1:9"})
    assert nothing.returncode == 0 and nothing.stdout.split() == [] and "Traceback" not in nothing.stderr


async def test_h2ochat_model_chooses_the_model_as_model_does(server: RunningServer) -> None:
    refused = await run("ask", "--url", server.url, "hi", env=environment(H2OCHAT_MODEL="nope"))
    assert refused.returncode == 1 and "Unknown model 'nope'" in refused.stderr
    answered = await run("ask", "--url", server.url, "hi there", env=environment(H2OCHAT_MODEL=FIXED_MODEL))
    assert answered.returncode == 0 and answered.stdout.strip() == "hi there", answered.stderr
