"""A person's API keys (issue 24): made with ``h2ochat keys``, used by real clients, revoked everywhere at once."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
import text_generation
from click.testing import CliRunner
from msgspec.structs import replace

from h2ochat.cli import cli
from h2ochat.server import RunningServer, ServerConfig, start_server
from h2ochat.server.edge.http import STORE
from h2ochat.server.storage.devices import digest
from h2ochat.server.storage.people import API_KEY, new_api_key
from tests.helpers import FIXED_MODEL, RawClient, fixed_config

SHARED = "the-deployment-s-shared-key"
# text_generation 0.7 calls pydantic's deprecated .dict(); the warning is theirs, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


def keyed(db: str = ":memory:") -> ServerConfig:
    return replace(
        fixed_config(db, text="Hi there."),
        api_key=SHARED,
        trusted_user_header="X-Forwarded-Email",
        forwarded_allow_ips=["127.0.0.1"],
    )


async def make_key(server: RunningServer, login: str) -> tuple[str, str]:
    secret = new_api_key()
    key = await server.app[STORE].create_api_key(login, "tests", digest(secret))
    return secret, key.id


async def models(server: RunningServer, key: str) -> list[str]:
    """The models /v1 lists to this key (an SDK client each time, closed after)."""
    async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as client:
        return [model.id for model in (await client.models.list()).data]


async def test_a_persons_key_opens_v1_generate_and_the_chat_as_them() -> None:
    async with start_server(keyed()) as server:
        secret, _ = await make_key(server, "alice@example.com")
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0) as client:
            answer = await client.chat.completions.create(
                model=FIXED_MODEL, messages=[{"role": "user", "content": "Hi"}]
            )
        assert answer.choices[0].message.content == "Hi there."
        tgi = text_generation.AsyncClient(server.url, headers={"Authorization": f"Bearer {secret}"})
        assert (await tgi.generate("Hi", max_new_tokens=5)).generated_text == "Hi there."
        program = RawClient(server.url)
        browser = RawClient(server.url)
        try:
            auth = {"Authorization": f"Bearer {secret}"}
            await program.request("POST", "/settings", data={"ethicsModalAccepted": "true"}, headers=auth)
            status, body, response = await program.request(
                "POST", "/conversation", json={"model": FIXED_MODEL}, headers=auth
            )
            assert status == 200 and "Set-Cookie" not in response.headers
            conversation = body["conversationId"]
            status, _, _ = await program.request(
                "POST", f"/conversation/{conversation}", json=program.message_body("Hello"), headers=auth
            )
            assert status == 200
            # The same person in a browser behind the proxy finds what the program wrote.
            proxy = {"X-Forwarded-Email": "alice@example.com"}
            status, body, _ = await browser.request("GET", f"/api/conversation/{conversation}", headers=proxy)
            assert status == 200 and body["messages"][-1]["content"] == "Hi there."
        finally:
            await program.close()
            await browser.close()


async def test_an_unknown_or_revoked_key_is_refused_and_the_shared_key_still_works() -> None:
    async with start_server(keyed()) as server:
        secret, key_id = await make_key(server, "bob@example.com")
        assert await models(server, SHARED)  # the deployment's key, as before
        assert await models(server, secret)
        assert await server.app[STORE].revoke_api_key("bob@example.com", key_id)
        for key in (secret, new_api_key()):
            with pytest.raises(openai.AuthenticationError, match="revoked, or never issued"):
                await models(server, key)
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            await models(server, "h2o_short")  # not a person's key's shape: the shared key's check
        client = RawClient(server.url)
        try:
            status, body, _ = await client.request(
                "GET", "/api/conversations", headers={"Authorization": f"Bearer {secret}"}
            )
            assert status == 401 and "revoked, or never issued" in body["message"]
        finally:
            await client.close()


async def test_a_key_revoked_on_one_replica_is_refused_by_the_other_at_once(postgres_url: str) -> None:
    config = keyed(postgres_url)
    async with start_server(config) as one, start_server(config) as two:
        secret, key_id = await make_key(one, "carol@example.com")
        assert await models(two, secret)
        assert await one.app[STORE].revoke_api_key("carol@example.com", key_id)
        with pytest.raises(openai.AuthenticationError):
            await models(two, secret)


def test_the_command_line_makes_lists_and_revokes_keys(tmp_path: Path) -> None:
    db = str(tmp_path / "chat.db")
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "laptop", "--user", "Dave@Example.com", "--db", db])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[0]
    assert API_KEY.fullmatch(secret) and "shown once" in made.stderr
    listed = runner.invoke(cli, ["keys", "list", "--user", "dave@example.com", "--db", db])
    assert listed.exit_code == 0 and "laptop" in listed.output and "live" in listed.output
    assert secret not in listed.output  # only its hash was kept
    key_id = listed.output.split()[0]
    revoked = runner.invoke(cli, ["keys", "revoke", key_id, "--user", "dave@example.com", "--db", db])
    assert revoked.exit_code == 0 and f"Revoked {key_id}" in revoked.output
    again = runner.invoke(cli, ["keys", "revoke", key_id, "--user", "dave@example.com", "--db", db])
    assert again.exit_code == 1 and "has no live key" in again.output
    assert "revoked" in runner.invoke(cli, ["keys", "list", "--user", "dave@example.com", "--db", db]).output
    bad = runner.invoke(cli, ["keys", "create", "  ", "--user", "dave@example.com", "--db", db])
    assert bad.exit_code == 1 and "1 to 100 printable characters" in bad.output


async def test_a_person_behind_the_proxy_manages_their_keys_over_http() -> None:
    async with start_server(keyed()) as server:
        alice = RawClient(server.url)
        try:
            proxy = {"X-Forwarded-Email": "alice@example.com"}
            status, made, _ = await alice.request("POST", "/api/keys", json={"name": " phone "}, headers=proxy)
            assert status == 200 and made["name"] == "phone" and API_KEY.fullmatch(made["key"])
            status, listed, _ = await alice.request("GET", "/api/keys", headers=proxy)
            assert [(k["id"], k["name"], k["revokedAt"]) for k in listed] == [(made["id"], "phone", None)]
            assert "key" not in listed[0]  # shown once, at its making
            assert await models(server, made["key"])
            # A key opens the person's history, but makes no more keys; nor can anyone without a person.
            status, body, _ = await alice.request(
                "POST", "/api/keys", json={"name": "more"}, headers={"Authorization": f"Bearer {made['key']}"}
            )
            assert status == 403 and "cannot manage keys" in body["message"]
            anonymous = RawClient(server.url)
            try:
                status, body, _ = await anonymous.request("GET", "/api/keys")
                assert status == 403 and "API keys belong to people" in body["message"]
            finally:
                await anonymous.close()
            for bad in ({"name": ""}, {"name": "x" * 101}, {"name": "tab\there"}):
                status, body, _ = await alice.request("POST", "/api/keys", json=bad, headers=proxy)
                assert status == 400 and "1 to 100 printable characters" in body["message"], bad
            bob = {"X-Forwarded-Email": "bob@example.com"}
            status, _, _ = await alice.request("DELETE", f"/api/keys/{made['id']}", headers=bob)
            assert status == 404  # not his
            status, _, _ = await alice.request("DELETE", f"/api/keys/{made['id']}", headers=proxy)
            assert status == 200
            with pytest.raises(openai.AuthenticationError):
                await models(server, made["key"])
        finally:
            await alice.close()
