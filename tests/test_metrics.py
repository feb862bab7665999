"""GET /metrics (README "Metrics"): scraped over loopback and read with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from msgspec.structs import replace
from prometheus_client.parser import text_string_to_metric_families

from h2ochat.server import ConfigError, ModelConfig, RunningServer, ServerConfig, start_server
from h2ochat.server.config import FixedEndpoint
from h2ochat.server.edge.http import STORE
from h2ochat.server.storage import StoreUnavailable
from tests.helpers import FIXED_MODEL, RawClient, fixed_config


def counting(config: ServerConfig, **settings: Any) -> ServerConfig:
    return replace(config, metrics=True, **settings)


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with start_server(counting(fixed_config(text="one two three four"))) as running:
        yield running


async def scrape(
    url: str, headers: dict[str, str] | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the scrape: (name, sorted labels) -> value."""
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=")  # the exposition format
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_off_by_default_the_route_does_not_exist() -> None:
    async with (
        start_server(fixed_config()) as running,
        aiohttp.ClientSession() as http,
        http.get(running.url + "/metrics") as response,
    ):
        assert response.status == 404
        assert "No such endpoint" in (await response.json())["message"]


async def test_answers_tokens_and_latencies_are_counted_for_every_api(server: RunningServer) -> None:
    client = RawClient(server.url)
    try:
        await client.accept()
        conversation = await client.create()
        status, _, _ = await client.message(conversation, "Hi")
        assert status == 200
        # The TGI and OpenAI APIs go through the same answer loop: each adds an answer of 5 tokens.
        status, _, _ = await client.request("POST", "/generate", json={"inputs": "Hi"})
        assert status == 200
        body = {"model": FIXED_MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        status, _, _ = await client.request("POST", "/v1/chat/completions", json=body)
        assert status == 200
    finally:
        await client.close()
    samples = await scrape(server.url)
    assert value(samples, "h2ochat_answers_total", model=FIXED_MODEL, outcome="eos_token") == 3
    assert value(samples, "h2ochat_generated_tokens_total", model=FIXED_MODEL) == 3 * 5  # four words and </s>
    assert value(samples, "h2ochat_first_token_seconds_count", model=FIXED_MODEL) == 3
    assert value(samples, "h2ochat_token_seconds_count", model=FIXED_MODEL) == 3 * 4
    assert value(samples, "h2ochat_first_token_seconds_sum", model=FIXED_MODEL) > 0
    # Requests by the route's pattern, never its path: one series for every conversation.
    assert value(samples, "h2ochat_requests_total", method="POST", route="/conversation/{id}", status="200") == 1
    assert value(samples, "h2ochat_requests_total", method="POST", route="/generate", status="200") == 1
    assert value(samples, "h2ochat_requests_total", method="POST", route="/v1/chat/completions", status="200") == 1
    assert not any(conversation in str(labels) for _, labels in samples)
    assert value(samples, "h2ochat_places", model=FIXED_MODEL) == 0  # the fixed backend sets no limit


async def test_a_refused_request_and_an_unknown_path_are_counted_by_status(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.get(server.url + "/no/such/thing") as response:
                assert response.status == 404
        async with http.post(server.url + "/generate", data=b"not json") as response:
            assert response.status == 415
    samples = await scrape(server.url)
    assert value(samples, "h2ochat_requests_total", method="GET", route="(no route)", status="404") == 2
    assert value(samples, "h2ochat_requests_total", method="POST", route="/generate", status="415") == 1


async def test_a_failed_and_a_stopped_answer_are_counted_as_such() -> None:
    config = counting(fixed_config(text="one two three four five six", fail_after=2))
    async with start_server(config) as running, aiohttp.ClientSession() as http:
        async with http.post(running.url + "/generate_stream", json={"inputs": "Hi"}) as response:
            assert b"failed on purpose" in await response.read()
        samples = await scrape(running.url)
    assert value(samples, "h2ochat_answers_total", model=FIXED_MODEL, outcome="error") == 1
    assert value(samples, "h2ochat_generated_tokens_total", model=FIXED_MODEL) == 2

    slow = counting(fixed_config(text="one two three four five six", delay=0.5))
    async with start_server(slow) as running, aiohttp.ClientSession() as http:
        response = await http.post(running.url + "/generate_stream", json={"inputs": "Hi"})
        await response.content.readuntil(b"\n\n")  # the first token, then the client leaves
        response.close()
        for _ in range(100):  # the server notices the client gone at its next write
            samples = await scrape(running.url)
            if value(samples, "h2ochat_answers_total", model=FIXED_MODEL, outcome="interrupted"):
                break
            await asyncio.sleep(0.05)
    assert value(samples, "h2ochat_answers_total", model=FIXED_MODEL, outcome="interrupted") == 1


async def test_the_queue_and_the_places_are_read_when_scraped() -> None:
    endpoint = FixedEndpoint(text="one two three", first_token_delay=30, max_concurrency=1)
    config = ServerConfig(
        port=0, db=":memory:", metrics=True, models=[ModelConfig(name=FIXED_MODEL, endpoints=[endpoint])]
    )
    async with start_server(config) as running, aiohttp.ClientSession() as http:
        answers = [asyncio.ensure_future(http.post(running.url + "/generate", json={"inputs": "Hi"})) for _ in range(2)]
        try:
            for _ in range(100):
                samples = await scrape(running.url)
                if value(samples, "h2ochat_queue_length", model=FIXED_MODEL) == 1:
                    break
                await asyncio.sleep(0.05)
            assert value(samples, "h2ochat_answers_running", model=FIXED_MODEL) == 1
            assert value(samples, "h2ochat_queue_length", model=FIXED_MODEL) == 1
            assert value(samples, "h2ochat_places", model=FIXED_MODEL) == 1
        finally:
            for answer in answers:
                answer.cancel()
            await asyncio.gather(*answers, return_exceptions=True)


async def test_a_database_failure_is_counted(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def unreachable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("The database is unreachable (injected)")

    monkeypatch.setattr(server.app[STORE], "save_settings", unreachable)
    async with aiohttp.ClientSession() as http:
        form = {"ethicsModalAccepted": "true", "activeModel": FIXED_MODEL}
        async with http.post(server.url + "/settings", data=form, headers={"Referer": server.url + "/"}) as response:
            assert response.status == 503
    samples = await scrape(server.url)
    assert value(samples, "h2ochat_database_errors_total", kind="StoreUnavailable") == 1


async def test_only_the_allowed_addresses_may_scrape() -> None:
    config = counting(fixed_config(), metrics_allow_ips=["10.0.0.0/8"], forwarded_allow_ips=["127.0.0.1"])
    async with start_server(config) as running, aiohttp.ClientSession() as http:
        async with http.get(running.url + "/metrics") as response:
            assert response.status == 403
            message = (await response.json())["message"]
            assert "127.0.0.1" in message and "metrics_allow_ips" in message
        # Through the trusted proxy, the address it added (the last) counts; what the client wrote first does not.
        assert await scrape(running.url, {"X-Forwarded-For": "8.8.8.8, 10.1.2.3"})
        async with http.get(running.url + "/metrics", headers={"X-Forwarded-For": "10.1.2.3, 8.8.8.8"}) as response:
            assert response.status == 403 and "8.8.8.8" in (await response.json())["message"]
    # From an address that is not a trusted proxy, X-Forwarded-For is the client's own words: ignored.
    untrusted = counting(fixed_config(), metrics_allow_ips=["10.0.0.0/8"])
    async with (
        start_server(untrusted) as running,
        aiohttp.ClientSession() as http,
        http.get(running.url + "/metrics", headers={"X-Forwarded-For": "10.1.2.3"}) as response,
    ):
        assert response.status == 403


def test_an_address_that_is_not_one_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ConfigError, match="metrics_allow_ips: 'localhost' is not an IP address"):
        ServerConfig(metrics=True, metrics_allow_ips=["localhost"])


async def test_two_servers_in_one_process_count_apart() -> None:
    async with start_server(counting(fixed_config())) as one, start_server(counting(fixed_config())) as two:
        async with aiohttp.ClientSession() as http, http.post(one.url + "/generate", json={"inputs": "Hi"}) as response:
            assert response.status == 200
        assert value(await scrape(one.url), "h2ochat_answers_total", model=FIXED_MODEL, outcome="eos_token") == 1
        assert value(await scrape(two.url), "h2ochat_answers_total", model=FIXED_MODEL, outcome="eos_token") == 0
