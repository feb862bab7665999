"""Sign-in with OpenID Connect (issue 24) against a real provider on loopback: ``oidc-provider-mock``.

The browser is an aiohttp client that follows the redirects by hand and fills the provider's own
authorization form (its ``sub`` field, which the provider also gives as the ``email`` claim).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from joserfc.jwk import KeySet, RSAKey
from msgspec.structs import replace

from h2ochat.server import ConfigError, RunningServer, ServerConfig, start_server
from h2ochat.server.edge.http import STORE
from h2ochat.server.storage.people import Login
from h2ochat.server.web.login import PROVIDER, safe_next
from h2ochat.server.web.oidc import SECRET_ENV
from tests.helpers import FIXED_MODEL, RawClient, fixed_config

oidc_provider_mock = pytest.importorskip("oidc_provider_mock")
# The provider (a test peer) runs authlib's own deprecated paths; the warnings are theirs, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore::authlib.deprecate.AuthlibDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:authlib"),
]


@pytest.fixture(scope="module", autouse=True)
def client_secret() -> Iterator[None]:
    """This server's secret at the provider, from the environment as in a deployment."""
    before = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = "a-secret-the-provider-takes"
    yield
    if before is None:
        del os.environ[SECRET_ENV]
    else:
        os.environ[SECRET_ENV] = before


@pytest.fixture(scope="module")
def issuer() -> Iterator[str]:
    with oidc_provider_mock.run_server_in_thread() as provider:
        yield f"http://localhost:{provider.server_port}"


def signing_in(issuer: str, **settings: Any) -> ServerConfig:
    chosen = {"oidc_issuer": issuer, "oidc_client_id": "h2ochat", **settings}
    return replace(fixed_config(text="Hello there."), **chosen)


@pytest.fixture
async def server(issuer: str) -> AsyncIterator[RunningServer]:
    async with start_server(signing_in(issuer)) as running:
        yield running


class Browser(RawClient):
    async def go(self, url: str, **form: str) -> aiohttp.ClientResponse:
        """One step, not followed: a GET, or a POST of ``form`` (the provider's page)."""
        method = "POST" if form else "GET"
        async with self.http.request(method, url, data=form or None, allow_redirects=False) as response:
            await response.read()
            return response

    async def sign_in(self, sub: str, next_path: str = "/", tamper: Any = None) -> aiohttp.ClientResponse:
        """/login, the provider's form, then the callback: the callback's answer."""
        started = await self.go(f"{self.url}/login?next={urllib.parse.quote(next_path)}")
        assert started.status == 303, started
        at_provider = started.headers["Location"]
        if tamper is not None:
            await tamper(urllib.parse.parse_qs(urllib.parse.urlsplit(at_provider).query))
        authorized = await self.go(at_provider, sub=sub)
        assert authorized.status == 302, authorized
        return await self.go(authorized.headers["Location"])

    async def user(self) -> Any:
        _, body, _ = await self.request("GET", "/api/v2/user")
        return body["json"]


async def test_signing_in_moves_the_conversations_and_every_browser_finds_them(server: RunningServer) -> None:
    first, second = Browser(server.url), Browser(server.url)
    try:
        await first.accept()
        conversation = await first.create()
        status, _, _ = await first.message(conversation, "Remember the tulips")
        assert status == 200 and await first.user() is None
        done = await first.sign_in("alice@example.com", next_path=f"/conversation/{conversation}")
        assert done.status == 303 and done.headers["Location"] == f"/conversation/{conversation}"
        assert "hf-chat=" in done.headers["Set-Cookie"]
        user = await first.user()
        assert user["email"] == "alice@example.com" and user["logoutDisabled"] is False
        # Another browser signs in as her and finds the conversation made before the first signed in.
        assert (await second.sign_in("Alice@Example.com")).status == 303
        status, body, _ = await second.request("GET", f"/api/conversation/{conversation}")
        assert status == 200 and body["messages"][-1]["content"] == "Hello there."
        # Signing out the second leaves the first signed in.
        status, _, response = await second.request("POST", "/logout", json={})
        assert status == 200 and "Max-Age=0" in response.headers["Set-Cookie"]
        assert await second.user() is None
        status, _, _ = await second.request("GET", f"/api/conversation/{conversation}")
        assert status == 404
        assert (await first.user())["email"] == "alice@example.com"
    finally:
        await first.close()
        await second.close()


async def test_a_forged_or_spent_state_is_refused(server: RunningServer) -> None:
    browser = Browser(server.url)
    try:
        forged = await browser.go(f"{server.url}/login/callback?code=x&state=not-one-we-made")
        assert forged.status == 400
        spent: list[str] = []

        async def remember(query: dict[str, list[str]]) -> None:
            spent.append(query["state"][0])

        assert (await browser.sign_in("bob@example.com", tamper=remember)).status == 303
        again = await browser.go(f"{server.url}/login/callback?code=x&state={spent[0]}")
        assert again.status == 400  # a state works once
        _, body, _ = await browser.request("GET", f"/login/callback?code=x&state={spent[0]}")
        assert "unknown, expired or already used" in body["message"]
    finally:
        await browser.close()


async def test_a_wrong_nonce_and_a_wrongly_signed_token_are_refused(server: RunningServer) -> None:
    store = server.app[STORE]

    async def other_nonce(query: dict[str, list[str]]) -> None:
        state = query["state"][0]
        begun = await store.take_login(state)
        assert begun is not None
        await store.begin_login(state, Login("a-nonce-the-provider-never-saw", begun.verifier, "/", ""), 600)

    browser = Browser(server.url)
    try:
        refused = await browser.sign_in("carol@example.com", tamper=other_nonce)
        assert refused.status == 400
        assert await browser.user() is None
        # The provider's keys replaced by others (an injected fault): its signature no longer checks.
        provider = server.app[PROVIDER]
        await provider._discover()
        when, metadata, _ = provider._found  # type: ignore[misc]
        stranger = RSAKey.generate_key(2048, private=False)
        provider._found = (when, metadata, KeySet([stranger]))
        refused = await browser.sign_in("carol@example.com")
        assert refused.status == 400 and await browser.user() is None
    finally:
        await browser.close()


async def test_an_expired_id_token_is_refused() -> None:
    with oidc_provider_mock.run_server_in_thread(access_token_max_age=timedelta(minutes=-5)) as provider:
        async with start_server(signing_in(f"http://localhost:{provider.server_port}")) as running:
            browser = Browser(running.url)
            try:
                refused = await browser.sign_in("dave@example.com")
                assert refused.status == 400 and await browser.user() is None
            finally:
                await browser.close()


async def test_only_allowed_people_sign_in(issuer: str) -> None:
    config = signing_in(issuer, allowed_emails=["Erin@other.org"], allowed_domains=["example.com"])
    async with start_server(config) as running:
        for sub, status in (("erin@other.org", 303), ("frank@example.com", 303), ("mallory@evil.org", 403)):
            browser = Browser(running.url)
            try:
                assert (await browser.sign_in(sub)).status == status, sub
            finally:
                await browser.close()


def test_next_stays_on_this_site() -> None:
    for hostile in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "", "x"):
        assert safe_next(hostile) == "/", hostile
    assert safe_next("/conversation/abc?x=1") == "/conversation/abc?x=1"


async def test_an_open_redirect_through_next_goes_home(server: RunningServer) -> None:
    browser = Browser(server.url)
    try:
        done = await browser.sign_in("grace@example.com", next_path="https://evil.example/")
        assert done.status == 303 and done.headers["Location"] == "/"
    finally:
        await browser.close()


async def test_messages_before_login(issuer: str) -> None:
    async with start_server(signing_in(issuer, messages_before_login=1)) as running:
        browser = Browser(running.url)
        try:
            await browser.accept()
            conversation = await browser.create()
            assert (await browser.message(conversation, "One"))[0] == 200
            status, body, _ = await browser.message(conversation, "Two")
            assert status == 401 and "Sign in to go on" in body["message"] and "/login" in body["message"]
            assert (await browser.sign_in("heidi@example.com")).status == 303
            assert (await browser.message(conversation, "Two"))[0] == 200  # the conversation came along
        finally:
            await browser.close()
    async with start_server(signing_in(issuer, messages_before_login=0)) as running:
        browser = Browser(running.url)
        try:
            await browser.accept()
            status, body, _ = await browser.message(await browser.create(), "One")
            assert status == 401 and "only with people signed in" in body["message"]
        finally:
            await browser.close()


def test_sign_in_settings_are_checked(issuer: str) -> None:
    for settings, error in (
        ({"oidc_client_id": None}, "go together"),
        ({"oidc_issuer": "http://provider.example"}, "must be an https:// URL"),
    ):
        with pytest.raises(ConfigError, match=error):
            signing_in(issuer, **settings)
    with pytest.raises(ConfigError, match="needs sign-in"):
        replace(fixed_config(), messages_before_login=3)


async def test_without_sign_in_the_routes_do_not_exist(fixed_server: RunningServer) -> None:
    client = RawClient(fixed_server.url)
    try:
        status, body, _ = await client.request("GET", "/login")
        assert status == 404 and "Sign-in is off" in body["message"]
    finally:
        await client.close()
    assert FIXED_MODEL


async def test_the_callback_may_reach_another_replica(issuer: str, postgres_url: str) -> None:
    """Two replicas behind one public name (a load balancer, played here by X-Forwarded-Host): the sign-in
    starts on one and its callback lands on the other."""
    config = signing_in(
        issuer, db=postgres_url, forwarded_allow_ips=["127.0.0.1"], allowed_hosts=["chat.example", "127.0.0.1"]
    )
    public = {"X-Forwarded-Host": "chat.example"}
    async with start_server(config) as one, start_server(config) as two:
        browser = Browser(one.url)
        try:
            async with browser.http.get(f"{one.url}/login?next=/", headers=public, allow_redirects=False) as started:
                assert started.status == 303
                at_provider = started.headers["Location"]
            assert "redirect_uri=http://chat.example/login/callback" in urllib.parse.unquote(at_provider)
            authorized = await browser.go(at_provider, sub="judy@example.com")
            callback = urllib.parse.urlsplit(authorized.headers["Location"])
            async with browser.http.get(
                f"{two.url}{callback.path}?{callback.query}", headers=public, allow_redirects=False
            ) as done:
                assert done.status == 303, await done.text()
                cookie = done.cookies["hf-chat"].value
            async with browser.http.get(
                f"{one.url}/api/v2/user", headers={**public, "Cookie": f"hf-chat={cookie}"}
            ) as response:
                assert (await response.json())["json"]["email"] == "judy@example.com"
        finally:
            await browser.close()


async def test_a_flood_of_sign_ins_begun_is_cut_off(issuer: str) -> None:
    """Each /login keeps a row for ten minutes: one address may begin only so many a minute."""
    async with start_server(signing_in(issuer, new_sessions_per_minute=3)) as running:
        browser = Browser(running.url)
        try:
            answers = [(await browser.go(f"{running.url}/login")).status for _ in range(5)]
            assert answers == [303, 303, 303, 429, 429]
            status, body, response = await browser.request("GET", "/login")
            assert status == 429 and "sign-ins begun" in body["message"] and "Retry-After" in response.headers
        finally:
            await browser.close()
