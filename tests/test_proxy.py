"""Calls through HTTP, SOCKS5 and SOCKS4 proxies, with credentials, and from the environment."""

from __future__ import annotations

import logging

import pytest

from h2ochat import H2o, H2oChatError, H2oSession
from h2ochat.providers.options import proxy_from_env, redact
from reliability.proxies import HttpProxy, Socks4Proxy, Socks5Proxy
from tests.chatui import ChatUIDouble

USER = [{"role": "user", "content": "Hi"}]


async def test_http_proxy_with_credentials(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    async with HttpProxy(user="alice", password="s3cret") as proxy:
        text = await H2o.create_async("", USER, proxy=proxy.url, url=url)
    assert text == "Hello world"
    assert proxy.seen >= 1 and proxy.refused == 0 and proxy.targets[0].startswith(url)
    assert double.leaked == set()


async def test_socks5_proxy_with_credentials(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    async with Socks5Proxy(user="bob", password="hunter2") as proxy:
        text = await H2o.create_async("", USER, proxy=proxy.url, url=url)
    assert text == "Hello world"
    assert proxy.targets and proxy.refused == 0
    assert double.leaked == set()


async def test_socks4_proxy(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    async with Socks4Proxy() as proxy:
        assert await H2o.create_async("", USER, proxy=proxy.url, url=url) == "Hello world"
    assert proxy.targets and double.leaked == set()


async def test_socks5_wrong_password_is_a_proxy_error_without_the_password(
    chatui: tuple[ChatUIDouble, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = chatui
    caplog.set_level(logging.DEBUG)
    async with Socks5Proxy(user="bob", password="hunter2") as proxy:
        wrong = proxy.url.replace("hunter2", "wrong-pass-123")
        with pytest.raises(H2oChatError) as caught:
            await H2o.create_async("", USER, proxy=wrong, url=url, max_retries=0)
    assert type(caught.value).__name__ == "ProxyError"
    assert "wrong-pass-123" not in str(caught.value)
    assert "wrong-pass-123" not in caplog.text


async def test_proxy_from_environment_and_loopback_exemption(
    chatui: tuple[ChatUIDouble, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = chatui
    async with Socks5Proxy() as proxy:
        monkeypatch.setenv("ALL_PROXY", proxy.url)
        # Loopback targets are never sent to an environment proxy...
        assert await H2o.create_async("", USER, url=url) == "Hello world"
        assert proxy.seen == 0
        # ...other hosts are (checked without a request: this sandbox has no DNS).
        from yarl import URL

        assert proxy_from_env(URL("http://chat.example.com/")) == proxy.url
        monkeypatch.setenv("NO_PROXY", "example.com")
        assert proxy_from_env(URL("http://chat.example.com/")) is None


async def test_session_proxy_is_reused(chatui: tuple[ChatUIDouble, str]) -> None:
    _, url = chatui
    async with HttpProxy() as proxy, H2oSession(url, proxy=proxy.url) as session:
        assert await session.ask(USER) == "Hello world"
        assert await session.ask(USER) == "Hello world"
    assert len(proxy.targets) >= 2


def test_unsupported_proxy_scheme_and_redaction() -> None:
    with pytest.raises(ValueError, match="unsupported proxy scheme 'ftp'"):
        H2o.create_async_generator("", USER, proxy="ftp://user:pw@host:21", url="http://127.0.0.1:1")
    assert redact("socks5://user:pw@host:1080") == "socks5://***:***@host:1080"
    assert "pw" not in redact("http://user:pw@host:3128")
