"""People named by an identity proxy (issue 24, README "People: sign-in for teams"), over loopback.

The test client is the proxy: the server trusts 127.0.0.1 as one (``forwarded_allow_ips``), and each
``RawClient`` is a browser of its own, with its own cookies.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from msgspec.structs import replace

from h2ochat.server import ConfigError, RunningServer, ServerConfig, start_server
from tests.helpers import FIXED_MODEL, RawClient, fixed_config

EMAIL, NAME = "X-Forwarded-Email", "X-Forwarded-User"


def proxied(**settings: Any) -> ServerConfig:
    defaults = {"trusted_user_header": EMAIL, "trusted_name_header": NAME, "forwarded_allow_ips": ["127.0.0.1"]}
    return replace(fixed_config(text="Hi there."), **{**defaults, **settings})


class Browser(RawClient):
    """A browser behind the proxy: every request carries what the proxy adds for this person."""

    def __init__(self, url: str, **headers: str) -> None:
        super().__init__(url)
        self.headers = headers

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}
        return await super().request(method, path, **kwargs)


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with start_server(proxied()) as running:
        yield running


async def titles(browser: Browser) -> list[str]:
    status, body, _ = await browser.request("GET", "/api/conversations")
    assert status == 200, body
    return [conversation["title"] for conversation in body]


async def test_a_person_has_one_history_in_every_browser(server: RunningServer) -> None:
    home = Browser(server.url, **{EMAIL: "alice@example.com", NAME: "Alice"})
    work = Browser(server.url, **{EMAIL: "Alice@Example.com"})  # the same person, however the proxy cases it
    bob = Browser(server.url, **{EMAIL: "bob@example.com"})
    try:
        await home.accept()
        conversation = await home.create()
        status, _, response = await home.message(conversation, "Hello")
        assert status == 200 and "Set-Cookie" not in response.headers  # the proxy names them each time
        assert len(await titles(work)) == 1
        status, body, _ = await work.request("GET", f"/api/conversation/{conversation}")
        assert status == 200 and [m["content"] for m in body["messages"]][-2:] == ["Hello", "Hi there."]
        status, user, _ = await work.request("GET", "/api/v2/user")
        assert user["json"]["username"] == "Alice" and user["json"]["email"] == "alice@example.com"
        # Someone else sees none of it, and cannot reach it by its id.
        assert await titles(bob) == []
        status, _, _ = await bob.request("GET", f"/api/conversation/{conversation}")
        assert status == 404
    finally:
        for browser in (home, work, bob):
            await browser.close()


async def test_the_welcome_gate_holds_for_a_person(server: RunningServer) -> None:
    carol = Browser(server.url, **{EMAIL: "carol@example.com"})
    try:
        status, body, _ = await carol.request("POST", "/conversation", json={"model": FIXED_MODEL})
        conversation = body["conversationId"]
        status, body, _ = await carol.message(conversation, "Hello")
        assert (status, body["error"]) == (405, "You need to accept the welcome modal first")
        await carol.accept()
        status, _, _ = await carol.message(conversation, "Hello")
        assert status == 200
    finally:
        await carol.close()


async def test_from_an_address_that_is_not_the_proxy_the_header_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    async with start_server(proxied(forwarded_allow_ips=["10.0.0.1"])) as running:
        forger = Browser(running.url, **{EMAIL: "alice@example.com"})
        try:
            with caplog.at_level(logging.WARNING, logger="h2ochat.server"):
                _, user, _ = await forger.request("GET", "/api/v2/user")
                assert user["json"] is None
                await forger.accept()  # an anonymous session of its own, with a cookie, as without the header
                status, user, _ = await forger.request("GET", "/api/v2/user")
            assert status == 200 and user["json"] is None
            warnings = [r for r in caplog.records if "not in forwarded_allow_ips" in r.getMessage()]
            assert len(warnings) == 1 and "127.0.0.1" in warnings[0].getMessage()  # once per address
        finally:
            await forger.close()


async def test_a_login_the_proxy_cannot_mean_is_refused_and_a_name_is_cleaned(server: RunningServer) -> None:
    for bad in ("alice smith", "x" * 255, ""):
        browser = Browser(server.url, **{EMAIL: bad})
        try:
            status, body, _ = await browser.request("GET", "/api/conversations")
        finally:
            await browser.close()
        assert status == 400 and "X-Forwarded-Email header from the proxy" in body["message"], bad
    odd = Browser(server.url, **{EMAIL: "dave", NAME: " Dave\tSmith " + "d" * 300})
    try:
        _, user, _ = await odd.request("GET", "/api/v2/user")
        assert user["json"]["username"] == "DaveSmith " + "d" * 190 and user["json"]["email"] is None
    finally:
        await odd.close()


async def test_anonymous_use_is_unchanged_beside_people(server: RunningServer) -> None:
    anonymous = RawClient(server.url)
    try:
        await anonymous.accept()
        conversation = await anonymous.create()
        status, _, response = await anonymous.message(conversation, "Hello")
        assert status == 200 and "hf-chat" in response.cookies
        _, user, _ = await anonymous.request("GET", "/api/v2/user")
        assert user["json"] is None
    finally:
        await anonymous.close()


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"forwarded_allow_ips": []}, "needs forwarded_allow_ips naming the proxy"),
        ({"forwarded_allow_ips": ["*"]}, "needs forwarded_allow_ips naming the proxy"),
        ({"trusted_user_header": None}, "trusted_name_header is set without trusted_user_header"),
        ({"trusted_user_header": "X Email"}, "trusted_user_header: 'X Email' is not an HTTP header name"),
    ],
)
def test_settings_that_would_let_anyone_be_anyone_are_refused(settings: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        proxied(**settings)


async def test_a_person_is_one_history_across_two_replicas_on_postgresql(postgres_url: str) -> None:
    config = proxied(db=postgres_url)
    async with start_server(config) as one, start_server(config) as two:
        first = Browser(one.url, **{EMAIL: "frank@example.com"})
        second = Browser(two.url, **{EMAIL: "frank@example.com"})
        try:
            await first.accept()
            conversation = await first.create()
            status, _, _ = await first.message(conversation, "Hello")
            assert status == 200
            status, body, _ = await second.request("GET", f"/api/conversation/{conversation}")
            assert status == 200 and body["messages"][-1]["content"] == "Hi there."
            status, _, _ = await second.message(conversation, "Again")  # accepted once, on the other replica
            assert status == 200
        finally:
            await first.close()
            await second.close()
