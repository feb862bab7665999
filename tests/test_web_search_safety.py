"""The web search's fetcher never reaches an address the deployment did not allow (issue 25, "Safety").

Real requests over loopback: pages on 127.0.0.2 (tests/websearch_standins.py). Without
``allow_private`` each private target is refused before any connection; with it, only what it names
is trusted, on the first request and on every redirect.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from h2ochat.server import start_server
from h2ochat.server.config import ConfigError, WebSearchConfig
from h2ochat.server.websearch.fetcher import Refused, SafeFetcher
from tests.helpers import fixed_config
from tests.websearch_standins import Web, served_web


@pytest.fixture
async def web() -> AsyncIterator[Web]:
    async with served_web() as standin:
        yield standin


def fetcher(allow: list[str] | None = None, **names: list[str]) -> SafeFetcher:
    async def resolve(host: str) -> list[str]:
        if host in names:
            return names[host]
        raise OSError(f"unknown host {host}")

    kwargs: dict[str, Any] = {"resolver": resolve} if names else {}
    return SafeFetcher(allow_private=allow or [], timeout=2.0, max_bytes=1 << 20, **kwargs)


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://127.0.0.2:{port}/paris", "a loopback address"),
        ("http://10.0.0.1/", "a private address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
        ("http://[::1]:{port}/paris", "a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "an IPv4-mapped IPv6 address"),
        ("http://[fd00::1]/", "a private address"),
        ("http://0.0.0.0:{port}/", "an unspecified address"),
        ("http://224.0.0.1/", "a multicast address"),
        ("http://localhost:{port}/paris", "a loopback address"),
    ],
)
async def test_private_targets_are_refused_without_allow_private(web: Web, target: str, why: str) -> None:
    port = web.url.rsplit(":", 1)[1]
    with pytest.raises(Refused, match=why):
        await fetcher().fetch(target.format(port=port))


async def test_a_name_resolving_to_a_private_address_is_refused_even_beside_a_public_one() -> None:
    names = {"intranet.example": ["10.1.2.3"], "mixed.example": ["93.184.215.14", "192.168.1.5"]}
    with pytest.raises(Refused, match=r"intranet.example is a private address \(10.1.2.3\)"):
        await fetcher(**names).fetch("http://intranet.example/")
    with pytest.raises(Refused, match=r"mixed.example is a private address \(192.168.1.5\)"):
        await fetcher(**names).fetch("http://mixed.example/")


async def test_schemes_and_ports_other_than_http_80_and_443_are_refused() -> None:
    names = {"public.example": ["93.184.215.14"]}
    with pytest.raises(Refused, match="only http and https"):
        await fetcher(**names).fetch("ftp://public.example/file")
    with pytest.raises(Refused, match="port 8080: only ports 80 and 443"):
        await fetcher(**names).fetch("http://public.example:8080/")


async def test_allow_private_trusts_only_what_it_names_and_redirects_are_checked_each_time(web: Web) -> None:
    trusted = fetcher(["127.0.0.2"])
    page = await trusted.fetch(web.url + "/paris")
    assert page.content_type == "text/html" and "Eiffel" in page.text
    port = web.url.rsplit(":", 1)[1]
    for target in (f"http://127.0.0.1:{port}/paris", "http://10.0.0.1/", "http://169.254.169.254/", "http://[::1]/"):
        with pytest.raises(Refused, match="which this server does not fetch from"):
            await trusted.fetch(f"{web.url}/redirect?to={target}")
    # Three redirects are followed, a fourth is not.
    assert "Eiffel" in (await trusted.fetch(f"{web.url}/redirect?hops=3&to=/paris")).text
    with pytest.raises(Refused, match="more than 3 redirects"):
        await trusted.fetch(f"{web.url}/redirect?hops=4&to=/paris")


async def test_refused_results_are_listed_as_skipped_in_the_search(web: Web, raw_client: Any) -> None:
    port = web.url.rsplit(":", 1)[1]
    targets = [
        web.url + "/paris",  # 127.0.0.2, not allowed in this server
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        f"http://[::1]:{port}/",
        f"http://localhost:{port}/paris",
        f"{web.url}/redirect?to=http://10.0.0.1/",
    ]
    for target in targets:
        web.result(target, "x")
    search = WebSearchConfig(engine="searxng", searxng_url=web.url, results=len(targets))  # the engine: trusted
    async with start_server(msgspec.structs.replace(fixed_config(echo_prompt=True), web_search=search)) as server:
        client = raw_client(server.url)
        await client.accept()
        conversation = await client.create()
        status, raw, _ = await client.request("GET", f"/conversation/{conversation}/web-search?prompt=Eiffel")
        assert status == 200
        events = [json.loads(line) for line in raw.splitlines()]
        skipped = [e["args"][0] for e in events if e.get("message") == "Skipped"]
        assert sorted(skipped) == sorted(targets)
        assert next(e for e in events if e["type"] == "sources")["sources"] == []


def test_allow_private_entries_must_be_addresses_or_networks() -> None:
    with pytest.raises(ConfigError, match=r"web_search\.allow_private: 'intranet' is not an IP address"):
        WebSearchConfig(allow_private=["intranet"])
    with pytest.raises(ConfigError, match="searxng_url must be the address"):
        WebSearchConfig(engine="searxng")


def test_the_web_search_table_is_read_from_the_file(tmp_path: Any) -> None:
    from h2ochat.server.config import load_config

    path = tmp_path / "h2ochat.toml"
    path.write_text(
        '[web_search]\nengine = "searxng"\nsearxng_url = "http://127.0.0.1:8888"\nallow_private = ["10.0.0.0/8"]\n'
        "max_searches_per_minute = 3\n"
    )
    search = load_config(path).web_search
    assert (search.engine, search.allow_private, search.max_searches_per_minute) == ("searxng", ["10.0.0.0/8"], 3)
    path.write_text('[web_search]\nengin = "searxng"\n')
    with pytest.raises(ConfigError, match="engin"):
        load_config(path)


async def test_the_ddgs_engine_reads_the_library_s_results_and_its_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """ddgs needs the internet, so its class is replaced here by one answering in its documented shape
    (``text()``: a list of ``{"title", "href", "body"}``), and by one failing as it does offline."""
    import ddgs

    from h2ochat.server.websearch.engines import DdgsEngine, EngineError, Result

    class Answering:
        def __init__(self, timeout: int) -> None:
            self.timeout = timeout

        def text(self, query: str, max_results: int) -> list[dict[str, str]]:
            found = [{"title": f"T{i}", "href": f"https://e.example/{i}", "body": query} for i in range(9)]
            return [*found[:max_results], {"title": "no href"}]

    monkeypatch.setattr(ddgs, "DDGS", Answering)
    assert await DdgsEngine(2.0).search("eiffel", 2) == [
        Result("T0", "https://e.example/0", "eiffel"),
        Result("T1", "https://e.example/1", "eiffel"),
    ]

    class Offline(Answering):
        def text(self, query: str, max_results: int) -> list[dict[str, str]]:
            raise ddgs.exceptions.DDGSException("No results found.")

    monkeypatch.setattr(ddgs, "DDGS", Offline)
    with pytest.raises(EngineError, match="DDGS gave no results"):
        await DdgsEngine(2.0).search("eiffel", 2)
