"""Replicas as one service: real ``h2ochat serve`` processes on one PostgreSQL database.

Every request of a test goes to another replica, as a load balancer would
send it; one replica is killed with SIGKILL in the middle of an answer; the
database is restarted under running replicas. Skipped only where PostgreSQL
is not installed (and never under CI; see ``pg_cluster``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import RawClient, events
from tests.pgcluster import PASSWORD
from tests.replicas import FIXED_MODEL, replicas, write_config

# 60 words: at 0.05 s a word, an answer streams for about 3 s.
ANSWER = " ".join(f"word{n}" for n in range(60))


@pytest.fixture
async def clients() -> AsyncIterator[Any]:
    """``make(urls)``: one client per replica, all sharing one cookie jar (one browser)."""
    made: list[RawClient] = []

    def make(urls: list[str]) -> list[RawClient]:
        first = RawClient(urls[0])
        group = [first]
        for url in urls[1:]:
            other = RawClient.__new__(RawClient)
            other.url, other.http = url, first.http
            group.append(other)
        made.append(first)
        return group

    yield make
    for client in made:
        await client.close()


async def settled(client: RawClient, conversation: str) -> dict[str, Any]:
    """The last answer once it is no longer generating (the final save may follow the stream's end)."""
    deadline = time.monotonic() + 5
    while True:
        _, read, _ = await client.request("GET", f"/api/conversation/{conversation}")
        answer: dict[str, Any] = read["messages"][-1]
        if answer["status"] != "generating" or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.05)


async def test_two_replicas_are_one_service(tmp_path: Path, postgres_url: str, clients: Any) -> None:
    config = write_config(
        tmp_path / "replicas.toml",
        postgres_url,
        text=ANSWER,
        delay=0.05,
        checkpoint_interval=0.2,
        rate_limit_per_minute=4,
        max_conversations=3,
        new_sessions_per_minute=6,
    )
    with replicas(2, config) as (a, b):
        on_a, on_b = clients([a.url, b.url])
        # A session issued by A works on B.
        await on_a.accept()
        conversation = await on_b.create()
        status, listed, _ = await on_a.request("GET", "/api/conversations")
        assert status == 200 and [c["id"] for c in listed] == [conversation]

        # While A generates, B reads the text checkpointed so far; a stop posted to B ends A's stream.
        streaming = asyncio.create_task(on_a.message(conversation, "Talk."))
        await asyncio.sleep(1.0)
        _, read, _ = await on_b.request("GET", f"/api/conversation/{conversation}")
        partial = read["messages"][-1]
        assert partial["status"] == "generating"
        assert partial["content"] and ANSWER.startswith(partial["content"]) and partial["content"] != ANSWER
        stopped_at = time.monotonic()
        assert (await on_b.request("POST", f"/conversation/{conversation}/stop-generating"))[0] == 200
        status, body, _ = await streaming
        assert time.monotonic() - stopped_at < 0.5
        assert events(body)[-1]["error"] == "generation stopped: stop-generating was requested"
        assert (await settled(on_b, conversation))["status"] == "interrupted"

        # The message rate limit (4 a minute) is counted across replicas: one message above, three more.
        for n in range(3):
            client = on_b if n % 2 else on_a
            status, body, _ = await client.message(conversation, "Again.", max_new_tokens=1)
            assert status == 200, body
        status, body, response = await on_b.message(conversation, "Once more.", max_new_tokens=1)
        assert status == 429 and "per minute" in body["message"] and int(response.headers["Retry-After"]) > 0

        # The conversation cap (3 a session): one above, two more, whichever replica creates them.
        await on_a.create()
        await on_b.create()
        status, body, _ = await on_a.request("POST", "/conversation", json={"model": FIXED_MODEL})
        assert status == 409 and "delete some" in body["message"]

        # New sessions per address (6 a minute) across replicas: one above, five more, then a refusal.
        answers = []
        for n in range(7):
            fresh = clients([(a if n % 2 else b).url])[0]
            answers.append((await fresh.request("POST", "/settings", data={"ethicsModalAccepted": "true"}))[0])
        assert answers == [200] * 5 + [429, 429]
    for replica in (a, b):  # the serve line names the database, never its password
        log = replica.log.read_text()
        assert "database: postgresql://h2ochat:***@127.0.0.1" in " ".join(log.split()) and PASSWORD not in log


async def test_the_tree_and_the_branch_shown_are_the_same_on_every_replica(
    tmp_path: Path, postgres_url: str, clients: Any
) -> None:
    config = write_config(tmp_path / "tree.toml", postgres_url, text="Fine.")
    with replicas(2, config) as (a, b):
        on_a, on_b = clients([a.url, b.url])
        await on_a.accept()
        conversation = await on_b.create()
        first = on_a.message_body("one")
        assert (await on_a.request("POST", f"/conversation/{conversation}", json=first))[0] == 200
        again = {**first, "options": {**first["options"], "response_id": str(uuid.uuid4()), "is_retry": True}}
        assert (await on_b.request("POST", f"/conversation/{conversation}", json=again))[0] == 200
        old_answer = first["options"]["response_id"]
        # Chosen on A, shown on B; voted on B, read on A; deleted on A, gone on B.
        status, body, _ = await on_a.request(
            "PATCH", f"/conversation/{conversation}", json={"activeMessageId": old_answer}
        )
        assert (status, body) == (200, {"activeMessageId": old_answer})
        _, tree, _ = await on_b.request("GET", f"/api/conversation/{conversation}")
        assert tree["activeMessageId"] == old_answer and len(tree["messages"]) == 4
        vote = f"/conversation/{conversation}/message/{old_answer}/vote"
        assert (await on_b.request("POST", vote, json={"score": 1}))[0] == 200
        _, tree, _ = await on_a.request("GET", f"/api/conversation/{conversation}")
        assert {m["id"]: m["score"] for m in tree["messages"]}[old_answer] == 1
        status, body, _ = await on_a.request("DELETE", f"/conversation/{conversation}/message/{old_answer}")
        newer = again["options"]["response_id"]
        assert (status, body) == (200, {"activeMessageId": newer})
        _, tree, _ = await on_b.request("GET", f"/api/conversation/{conversation}")
        assert tree["activeMessageId"] == newer and old_answer not in {m["id"] for m in tree["messages"]}


def test_h2ochat_db_selects_postgresql_and_a_refusal_hides_the_password(tmp_path: Path, postgres_url: str) -> None:
    config = write_config(tmp_path / "no-db.toml", "", text="Hi")
    config.write_text(config.read_text().replace('db = ""\n', ""))
    wrong = postgres_url.replace(PASSWORD, "not-" + PASSWORD)
    done = subprocess.run(
        [sys.executable, "-m", "h2ochat", "serve", "--config", str(config), "--port", "0"],
        env={**os.environ, "H2OCHAT_DB": wrong},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    said = " ".join(done.stderr.split())  # as printed, wrapped to the terminal's width
    assert "could not open the database postgresql://h2ochat:***@127.0.0.1" in said
    assert "password authentication failed" in said and PASSWORD not in done.stderr + done.stdout


async def test_a_killed_replica_s_answers_are_marked_interrupted_by_another(
    tmp_path: Path, postgres_url: str, clients: Any
) -> None:
    config = write_config(
        tmp_path / "replicas.toml", postgres_url, text=ANSWER, delay=0.05, checkpoint_interval=0.2, welcome_gate=False
    )
    with replicas(2, config) as (a, b):
        on_a, on_b = clients([a.url, b.url])
        conversation = await on_a.create()
        streaming = asyncio.create_task(on_a.message(conversation, "Talk."))
        await asyncio.sleep(1.0)
        a.kill()
        killed = time.monotonic()
        with pytest.raises(aiohttp.ClientError):  # the connection dies with the process
            await streaming
        _, read, _ = await on_b.request("GET", f"/api/conversation/{conversation}")
        saved = read["messages"][-1]["content"]
        assert saved and ANSWER.startswith(saved)
        while time.monotonic() - killed < 30:
            _, read, _ = await on_b.request("GET", f"/api/conversation/{conversation}")
            if read["messages"][-1]["status"] != "generating":
                break
            await asyncio.sleep(0.5)
        answer = read["messages"][-1]
        assert answer["status"] == "interrupted", f"still {answer['status']} 30 s after the kill"
        assert answer["content"] == saved  # the text saved last is kept
        # The surviving replica serves the conversation on.
        status, _, _ = await on_b.message(conversation, "Still there?", max_new_tokens=2)
        assert status == 200


async def test_a_database_restart_is_a_clear_503_then_service_resumes_with_nothing_lost(
    tmp_path: Path, postgres_url: str, pg_cluster: Any, clients: Any
) -> None:
    config = write_config(tmp_path / "replicas.toml", postgres_url, text=ANSWER, delay=0.02, welcome_gate=False)
    with replicas(2, config) as (a, b):
        on_a, on_b = clients([a.url, b.url])
        conversation = await on_a.create()
        assert (await on_b.message(conversation, "Before.", max_new_tokens=5))[0] == 200
        streaming = asyncio.create_task(on_a.message(conversation, "During."))  # about 1.2 s of answer
        await asyncio.sleep(0.3)
        pg_cluster.stop()
        try:
            for client in (on_a, on_b):
                started = time.monotonic()
                status, body, response = await client.request("GET", "/api/conversations")
                assert status == 503 and "database" in body["message"].lower(), body
                assert "Retry-After" in response.headers
                assert time.monotonic() - started < 12
                status, body, _ = await client.message(conversation, "In the outage.")
                assert status == 503, body
            status, body, _ = await streaming  # the answer under way completes without the database
            assert status == 200 and events(body)[-1]["generated_text"].endswith(ANSWER)
        finally:
            pg_cluster.start()
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline and status != 200:
            status, read, _ = await (on_b if status % 2 else on_a).request("GET", f"/api/conversation/{conversation}")
            await asyncio.sleep(0.3)
        assert status == 200, "the replicas did not reconnect within 20 s"
        for client in (on_a, on_b):  # both replicas are back, and everything completed is there
            for _ in range(40):
                status, read, _ = await client.request("GET", f"/api/conversation/{conversation}")
                if status == 200 and read["messages"][-1]["status"] == "done":
                    break
                await asyncio.sleep(0.5)
            assert status == 200
            assert [m["content"] for m in read["messages"] if m["role"] == "user"] == ["Before.", "During."]
            assert read["messages"][-1]["content"] == ANSWER and read["messages"][-1]["status"] == "done"
