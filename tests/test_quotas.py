"""Quotas per person and the admins' usage view (issue 24, README "Quotas and use"), over loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import pytest
from msgspec.structs import replace

from h2ochat.server import ConfigError, RunningServer, ServerConfig, load_config, start_server
from h2ochat.server.config import PersonLimits
from h2ochat.server.edge.http import STORE
from h2ochat.server.storage.devices import digest
from h2ochat.server.storage.people import new_api_key
from tests.helpers import FIXED_MODEL, RawClient, fixed_config

EMAIL = "X-Forwarded-Email"
ANSWER_TOKENS = 5  # "one two three four" and </s>


def quota(**settings: Any) -> ServerConfig:
    defaults = {"trusted_user_header": EMAIL, "forwarded_allow_ips": ["127.0.0.1"], "tokens_per_day": 8}
    return replace(fixed_config(text="one two three four"), **{**defaults, **settings})


class Person(RawClient):
    def __init__(self, url: str, login: str | None) -> None:
        super().__init__(url)
        self.headers = {EMAIL: login} if login else {}

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}
        return await super().request(method, path, **kwargs)


async def messages_until_refused(
    client: RawClient, most: int = 4, server: RunningServer | None = None
) -> tuple[int, Any, Any]:
    """Messages in one conversation until one is refused: (answers given, the refusal's body, its response).

    With ``server``, each answer's tokens are waited for before the next message: they are counted once
    the answer is saved, which may come just after its stream ends (README "Quotas and use")."""
    await client.accept()
    conversation = await client.create()
    for given in range(most):
        status, body, response = await client.message(conversation, "Count")
        if status != 200:
            return given, body, response
        if server is not None:
            await tokens_counted(server, client, ANSWER_TOKENS * (given + 1))
    return most, None, None


async def tokens_counted(server: RunningServer, client: RawClient, tokens: int) -> None:
    store = server.app[STORE]
    login = getattr(client, "headers", {}).get(EMAIL)
    if login:
        session = (await store.person_session(login, ""))[1].id
    else:
        session = next(c.value for c in client.http.cookie_jar if c.key == "hf-chat")
    for _ in range(200):
        if await store.tokens_today(session) >= tokens:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{tokens} tokens were not counted in time")


async def test_the_days_tokens_run_out_for_a_person_and_an_anonymous_session_alike() -> None:
    async with start_server(quota()) as server:
        for login in ("alice@example.com", None):
            client = Person(server.url, login)
            try:
                given, body, response = await messages_until_refused(client, server=server)
            finally:
                await client.close()
            # Checked before each answer: 0 and 5 tokens used are under 8, 10 is not.
            assert given == 2 and response.status == 429, login
            assert "tokens_per_day" in body["message"] and "10 generated of the 8" in body["message"]
            assert 0 < int(response.headers["Retry-After"]) <= 86401


async def test_a_persons_own_limits_stand_over_the_servers() -> None:
    users = [
        PersonLimits(email="Alice@Example.com", tokens_per_day=0),  # no token limit for her
        PersonLimits(email="bob@example.com", rate_limit_per_minute=1, max_conversations=1),
    ]
    async with start_server(quota(users=users)) as server:
        alice, bob = Person(server.url, "alice@example.com"), Person(server.url, "bob@example.com")
        try:
            assert (await messages_until_refused(alice, server=server))[0] == 4
            given, body, response = await messages_until_refused(bob)
            assert given == 1 and response.status == 429 and "1 per minute" in body["message"]
            status, body, _ = await bob.request("POST", "/conversation", json={"model": FIXED_MODEL})
            assert status == 409 and "1 conversations" in body["message"]
        finally:
            await alice.close()
            await bob.close()


async def test_a_persons_api_key_spends_the_same_tokens() -> None:
    async with start_server(quota()) as server:
        secret = new_api_key()
        await server.app[STORE].create_api_key("carol@example.com", "script", digest(secret))
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0) as client:
            for _ in range(2):
                await client.chat.completions.create(model=FIXED_MODEL, messages=[{"role": "user", "content": "Hi"}])
            with pytest.raises(openai.RateLimitError, match="tokens_per_day"):
                await client.chat.completions.create(model=FIXED_MODEL, messages=[{"role": "user", "content": "Hi"}])
        carol = Person(server.url, "carol@example.com")  # and her browser finds the day spent too
        try:
            status, body, response = await carol.request(
                "POST", "/generate", json={"inputs": "Hi"}, headers={"Authorization": f"Bearer {secret}"}
            )
            assert (status, body["error_type"]) == (429, "overloaded") and "Retry-After" in response.headers
            given, _, _ = await messages_until_refused(carol)
            assert given == 0
        finally:
            await carol.close()


async def test_the_quota_holds_across_two_replicas_on_postgresql(postgres_url: str) -> None:
    config = quota(db=postgres_url)
    async with start_server(config) as one, start_server(config) as two:
        first, second = Person(one.url, "dave@example.com"), Person(two.url, "dave@example.com")
        try:
            assert (await messages_until_refused(first, server=one))[0] == 2
            assert (await messages_until_refused(second))[0] == 0
        finally:
            await first.close()
            await second.close()


async def test_admins_see_everyones_use_and_no_one_else_does() -> None:
    config = quota(tokens_per_day=0, admins=["Root@Example.com"], trusted_name_header="X-Forwarded-User")
    async with start_server(config) as server:
        erin = Person(server.url, "erin@example.com")
        erin.headers["X-Forwarded-User"] = "<script>alert(1)</script>"
        root = Person(server.url, "root@example.com")
        try:
            assert (await messages_until_refused(erin, most=3, server=server))[0] == 3
            status, body, _ = await root.request("GET", "/api/admin/usage?days=7")
            assert status == 200 and body["days"] == 7
            erin_row = next(p for p in body["people"] if p["login"] == "erin@example.com")
            assert (erin_row["messages"], erin_row["tokens"], erin_row["conversations"]) == (3, 15, 1)
            assert body["people"][0]["login"] == "erin@example.com"  # the busiest first
            status, page, response = await root.request("GET", "/admin/usage")
            text = page.decode()
            assert status == 200 and "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
            for path in ("/api/admin/usage", "/admin/usage"):
                status, body, _ = await erin.request("GET", path)
                assert status == 403 and "admins" in body["message"], path
            for bad in ("0", "367", "x"):
                status, body, _ = await root.request("GET", f"/api/admin/usage?days={bad}")
                assert status == 400 and "1 to 366" in body["message"]
        finally:
            await erin.close()
            await root.close()


async def test_an_anonymous_answer_on_the_default_server_records_nothing(fixed_server: RunningServer) -> None:
    client = RawClient(fixed_server.url)
    try:
        await client.accept()
        status, _, response = await client.message(await client.create(), "Hi")
        assert status == 200
        session = response.cookies["hf-chat"].value
        assert await fixed_server.app[STORE].tokens_today(session) == 0  # no quota, no person: not counted
    finally:
        await client.close()


def test_users_tables_are_read_from_the_file_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "h2ochat.toml"
    path.write_text(
        '[server]\ntokens_per_day = 1000\n[[users]]\nemail = "Alice@example.com"\ntokens_per_day = 50000\n'
        '[[users]]\nemail = "bob"\nrate_limit_per_minute = 5\n',
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.limits("alice@example.com") == (0, 1000, 50000)
    assert config.limits("bob") == (5, 1000, 1000)
    assert config.limits(None) == config.limits("carol") == (0, 1000, 1000)
    path.write_text('[[users]]\nemail = "a"\n[[users]]\nemail = "A"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="users: a has more than one"):
        load_config(path)
    path.write_text('[[users]]\nemail = "a"\ntokens_a_day = 5\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="tokens_a_day"):
        load_config(path)
