"""The server facing the open internet: cross-site requests, Host names, proxies, headers, logs,
bounded queues, and the inputs that used to end in a 500 (issue 13)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from msgspec.structs import replace

from h2ochat.server import ModelConfig, start_server
from h2ochat.server.config import ConfigError, FixedEndpoint, load_config
from h2ochat.server.edge.security import allowed_hosts, host_allowed
from reliability.process import write_config
from tests.helpers import FIXED_MODEL, branch, events, fixed_config

JSON = {"Content-Type": "application/json"}


async def send(url: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url + path, allow_redirects=False, **kwargs) as response,
    ):
        body = await (response.json() if response.content_type == "application/json" else response.read())
        return response.status, body, response


def browser() -> aiohttp.ClientSession:
    """A client that keeps the session cookie of a server addressed by IP."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


# Cross-site requests -------------------------------------------------------------------------------


async def test_a_no_cors_blob_from_another_origin_is_refused() -> None:
    """What a hostile page on a sibling host can send: no Content-Type, its own Origin."""
    async with start_server(replace(fixed_config(), welcome_gate=False)) as server:
        blob = b'{"model": "test/fixed"}'
        status, body, _ = await send(
            server.url, "POST", "/conversation", data=blob, headers={"Origin": "http://sibling.example"}
        )
        assert status == 403 and "Cross-origin" in body["message"]
        status, body, _ = await send(server.url, "POST", "/generate", data=b'{"inputs": "Hi"}')
        assert status == 415 and "application/json" in body["message"]


async def test_a_cross_origin_origin_is_refused_even_with_json() -> None:
    async with start_server(replace(fixed_config(), welcome_gate=False)) as server:
        headers = {**JSON, "Origin": "http://evil.example"}
        status, _, _ = await send(server.url, "POST", "/conversation", data=b'{"model": "x"}', headers=headers)
        assert status == 403


async def test_json_from_clients_that_are_not_browsers_is_accepted() -> None:
    async with start_server(replace(fixed_config(), welcome_gate=False)) as server:
        status, body, _ = await send(server.url, "POST", "/conversation", json={"model": FIXED_MODEL})
        assert status == 200 and body["conversationId"]
        status, body, _ = await send(server.url, "POST", "/generate", json={"inputs": "Hi"})
        assert status == 200 and body["generated_text"]


async def test_a_bodyless_state_change_needs_a_same_origin_origin_or_referer() -> None:
    # One client: the conversation belongs to its cookie.
    async with start_server(replace(fixed_config(), welcome_gate=False)) as server, browser() as http:
        async with http.post(server.url + "/conversation", json={"model": FIXED_MODEL}) as response:
            conversation = (await response.json())["conversationId"]
        path = f"{server.url}/conversation/{conversation}/stop-generating"
        async with http.post(path) as response:
            assert response.status == 403
        async with http.post(path, headers={"Origin": "http://other.example"}) as response:
            assert response.status == 403
        async with http.post(path, headers={"Origin": server.url}) as response:
            assert response.status == 200
        async with http.post(path, headers={"Referer": server.url + "/"}) as response:
            assert response.status == 200


async def test_a_form_post_needs_a_same_origin_referer() -> None:
    async with start_server(fixed_config()) as server:
        form = {"ethicsModalAccepted": "true"}
        status, _, _ = await send(server.url, "POST", "/settings", data=form)
        assert status == 403
        status, _, _ = await send(server.url, "POST", "/settings", data=form, headers={"Referer": "http://x.test/"})
        assert status == 403
        status, _, _ = await send(server.url, "POST", "/settings", data=form, headers={"Origin": server.url})
        assert status == 200


# Host names and proxies ----------------------------------------------------------------------------


async def test_a_foreign_host_name_is_refused_on_loopback() -> None:
    """DNS rebinding: a hostile name pointed at 127.0.0.1, with a Referer to match."""
    async with start_server(fixed_config()) as server:
        port = server.url.rsplit(":", 1)[1]
        headers = {"Host": f"evil.example:{port}", "Referer": f"http://evil.example:{port}/"}
        status, body, _ = await send(server.url, "POST", "/settings", data={"a": "b"}, headers=headers)
        assert status == 400 and "evil.example" in body["message"] and "allowed-hosts" in body["message"]
        status, _, _ = await send(server.url, "GET", "/api/models", headers={"Host": f"localhost:{port}"})
        assert status == 200


def test_the_default_host_names_follow_the_bound_address(caplog: pytest.LogCaptureFixture) -> None:
    assert allowed_hosts(fixed_config()) == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts(replace(fixed_config(), host="0.0.0.0")) is None
    assert allowed_hosts(replace(fixed_config(), host="0.0.0.0", allowed_hosts=["chat.example"])) == ["chat.example"]
    assert host_allowed("chat.example:443", ["chat.example"])
    assert host_allowed("a.chat.example", [".chat.example"]) and host_allowed("chat.example", [".chat.example"])
    assert not host_allowed("evilchat.example", [".chat.example"])
    assert host_allowed("[::1]:8080", ["[::1]"]) and not host_allowed("[::2]:8080", ["[::1]"])


async def test_all_interfaces_answer_any_host_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "h2ochat.server"):
        async with start_server(replace(fixed_config(), host="0.0.0.0")) as server:
            url = server.url.replace("0.0.0.0", "127.0.0.1")
            status, _, _ = await send(url, "GET", "/api/models", headers={"Host": "anything.example"})
            assert status == 200
    assert "any host name" in caplog.text and "--allowed-hosts" in caplog.text


async def test_forwarded_headers_are_believed_from_allowed_proxies_only() -> None:
    """Behind a TLS proxy: the cookie gets Secure and an https Referer passes, only from a trusted proxy."""
    proxy_headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example"}
    form_headers = {**proxy_headers, "Referer": "https://chat.example/"}
    config = replace(fixed_config(), allowed_hosts=["chat.example", "127.0.0.1"])
    async with start_server(replace(config, forwarded_allow_ips=["127.0.0.1"])) as server:
        status, _, response = await send(server.url, "POST", "/settings", data={"a": "b"}, headers=form_headers)
        assert status == 200 and "Secure" in response.headers["Set-Cookie"]
    async with start_server(config) as server:  # no trusted proxy: the headers are the client's word
        status, _, response = await send(server.url, "POST", "/settings", data={"a": "b"}, headers=form_headers)
        assert status == 403 and "Secure" not in response.headers.get("Set-Cookie", "")


@pytest.mark.parametrize("entry", ["proxy.local", "10.0.0.1/33", "10.0.0.256"])
async def test_a_forwarded_allow_ips_entry_that_is_no_address_stops_the_start(entry: str, tmp_path: Path) -> None:
    # It used to be accepted, and every request then failed with a plain-text 500.
    with pytest.raises(ConfigError, match=re.escape(f"forwarded_allow_ips: {entry!r} is not an IP address")):
        load_config(forwarded_allow_ips=["127.0.0.1", entry])
    config = tmp_path / "server.toml"
    config.write_text(f"[server]\nforwarded_allow_ips = [{json.dumps(entry)}]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(repr(entry))):
        load_config(config)
    with pytest.raises(ConfigError, match=re.escape(repr(entry))):
        async with start_server(replace(fixed_config(), forwarded_allow_ips=[entry])):
            pass


def test_h2ochat_serve_stops_at_a_forwarded_allow_ips_entry_that_is_no_address(tmp_path: Path) -> None:
    config = write_config(tmp_path / "fixed.toml", tmp_path / "fixed.db")
    command = [sys.executable, "-m", "h2ochat", "serve", "--config", str(config), "--port", "0"]
    # A bound, not a measure: the server it used to start ran until killed.
    done = subprocess.run(
        [*command, "--forwarded-allow-ips", "proxy.local"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "'proxy.local' is not an IP address" in done.stderr, done.stderr


# Headers and logs ----------------------------------------------------------------------------------


async def test_every_response_carries_the_security_headers(fixed_server: Any) -> None:
    for method, path in [("GET", "/api/models"), ("GET", "/nowhere"), ("POST", "/generate")]:
        _, _, response = await send(fixed_server.url, method, path, json={"inputs": "Hi"})
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


async def test_a_path_cannot_forge_a_log_line(fixed_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        await send(fixed_server.url, "GET", "/x%0a2026-11-29 INFO forged%0d")
    lines = [record.getMessage() for record in caplog.records if "forged" in record.getMessage()]
    assert lines and all("\n" not in line and "\r" not in line and "\\n" in line for line in lines)


async def test_a_client_leaving_mid_body_is_one_info_line(fixed_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    port = int(fixed_server.url.rsplit(":", 1)[1])
    with caplog.at_level(logging.INFO):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /settings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"activeModel"'
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        for _ in range(50):
            await asyncio.sleep(0.02)
            if any("client left" in record.getMessage() for record in caplog.records):
                break
    assert any("client left during POST /settings" in record.getMessage() for record in caplog.records)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# The remaining 500s --------------------------------------------------------------------------------


async def test_a_summary_with_a_failing_model_is_a_503() -> None:
    async with start_server(replace(fixed_config(fail_after=0), welcome_gate=False)) as server, browser() as http:
        async with http.post(server.url + "/conversation", json={"model": FIXED_MODEL}) as response:
            conversation = (await response.json())["conversationId"]
        body = {
            "inputs": "Hi",
            "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False},
        }
        async with http.post(f"{server.url}/conversation/{conversation}", json=body) as response:
            assert events(await response.read())[-1]["error_type"] == "generation"
        path = f"{server.url}/conversation/{conversation}/summarize"
        async with http.post(path, headers={"Origin": server.url}) as response:
            assert response.status == 503
            assert "title" in (await response.json())["message"]


async def test_an_authorization_header_that_is_not_utf8_is_a_401() -> None:
    async with start_server(replace(fixed_config(), api_key="k")) as server:
        port = int(server.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\n\r\n")
        await writer.drain()
        status_line = await reader.readline()
        writer.close()
        assert status_line.split()[1] == b"401"


@pytest.mark.parametrize(
    ("parameter", "value"), [("seed", 2**32), ("top_k", 2**70), ("top_k", 2**31)], ids=["seed", "top_k", "int"]
)
async def test_values_the_model_cannot_take_are_refused(fixed_server: Any, parameter: str, value: int) -> None:
    status, body, _ = await send(
        fixed_server.url, "POST", "/generate", json={"inputs": "Hi", "parameters": {parameter: value}}
    )
    assert status == 422 and parameter in body["error"]
    ok = {"seed": 2**32 - 1, "top_k": 2**31 - 1}[parameter]
    status, _, _ = await send(
        fixed_server.url, "POST", "/generate", json={"inputs": "Hi", "parameters": {parameter: ok, "do_sample": True}}
    )
    assert status == 200


# A bounded wait -------------------------------------------------------------------------------------


def one_place(max_queue: int, max_wait: float = 120.0, delay: float = 0.05) -> Any:
    endpoint = FixedEndpoint(text="one two three four five six", delay=delay, max_concurrency=1)
    model = ModelConfig(name=FIXED_MODEL, endpoints=[endpoint], max_queue=max_queue, max_wait=max_wait)
    return replace(fixed_config(), models=[model], welcome_gate=False)


async def test_past_the_queue_requests_are_refused_at_once_in_each_api_shape() -> None:
    async with start_server(one_place(max_queue=2)) as server, browser() as http, aiohttp.ClientSession() as others:

        async def generate() -> int:
            async with others.post(server.url + "/generate", json={"inputs": "Hi"}) as response:
                await response.read()
                return response.status

        running = [asyncio.ensure_future(generate()) for _ in range(3)]  # one answering, two waiting
        await asyncio.sleep(0.1)
        started = asyncio.get_running_loop().time()
        async with http.post(server.url + "/generate", json={"inputs": "Hi"}) as response:
            body = await response.json()
            assert response.status == 429 and body["error_type"] == "overloaded"
            assert 1 <= int(response.headers["Retry-After"]) <= 60
        chat = {"model": FIXED_MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        async with http.post(server.url + "/v1/chat/completions", json=chat) as response:
            body = await response.json()
            assert response.status == 429 and body["error"]["code"] == "overloaded"
            assert "Retry-After" in response.headers
        async with http.post(server.url + "/conversation", json={"model": FIXED_MODEL}) as response:
            conversation = (await response.json())["conversationId"]
        message = {
            "inputs": "Hi",
            "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4()), "is_retry": False},
        }
        async with http.post(f"{server.url}/conversation/{conversation}", json=message) as response:
            assert response.status == 429 and (await response.json())["error_type"] == "overloaded"
        assert asyncio.get_running_loop().time() - started < 1.0  # refused at once, not after a wait
        assert await asyncio.gather(*running) == [200, 200, 200]
        async with http.get(f"{server.url}/api/conversation/{conversation}") as response:
            stored = await response.json()
            assert branch(stored) == []  # a refused message is not stored


async def test_a_wait_past_max_wait_ends_with_an_overloaded_event() -> None:
    async with start_server(one_place(max_queue=4, max_wait=0.2, delay=0.2)) as server, aiohttp.ClientSession() as http:
        first = asyncio.ensure_future(http.post(server.url + "/generate_stream", json={"inputs": "Hi"}))
        await asyncio.sleep(0.05)
        async with http.post(server.url + "/generate_stream", json={"inputs": "Hi"}) as response:
            last = events(await response.read())[-1]
        assert last["error_type"] == "overloaded" and "Waited" in last["error"]
        (await first).close()


async def test_a_burst_arriving_together_is_bounded_too() -> None:
    """All at once: the queue is counted as requests arrive, not read off the semaphore afterwards."""
    async with start_server(one_place(max_queue=2)) as server, aiohttp.ClientSession() as http:

        async def generate() -> int:
            async with http.post(server.url + "/generate", json={"inputs": "Hi"}) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(generate() for _ in range(8)))
    assert sorted(statuses) == [200] * 3 + [429] * 5  # one running, two waiting, the rest refused
