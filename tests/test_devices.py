"""One history in several browsers over HTTP (issue 23, "Move to another device"): a code, linking,
the list, detaching, and the limits on guessing codes. Real loopback HTTP; each RawClient is a browser."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from h2ochat.server import RunningServer, start_server
from h2ochat.server.storage.devices import CODE_ALPHABET
from tests.helpers import RawClient, fixed_config

FIREFOX_ANDROID = "Mozilla/5.0 (Android 14; Mobile; rv:121.0) Gecko/121.0 Firefox/121.0"
SHOWN_CODE = re.compile(f"[{CODE_ALPHABET}]{{4}}-[{CODE_ALPHABET}]{{4}}")


@pytest.fixture(params=["sqlite", "postgres"])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """On both databases: a device's lookup is a statement of each store's own."""
    db = str(tmp_path / "devices.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    async with start_server(fixed_config(db=db, text="Fine.")) as running:
        yield running


async def chatted(client: RawClient) -> str:
    await client.accept()
    conversation = await client.create()
    status, body, _ = await client.message(conversation, "Hello?")
    assert status == 200, body
    return conversation


async def conversations(client: RawClient) -> list[str]:
    status, body, _ = await client.request("GET", "/api/conversations")
    assert status == 200, body
    return [c["id"] for c in body]


async def code(client: RawClient) -> dict[str, Any]:
    status, body, _ = await client.request("POST", "/api/devices/code", json={})
    assert status == 200, body
    return dict(body)


async def link(client: RawClient, code: str, agent: str = FIREFOX_ANDROID) -> tuple[int, Any]:
    status, body, _ = await client.request(
        "POST", "/api/devices/link", json={"code": code}, headers={"User-Agent": agent}
    )
    return status, body


async def test_a_code_brings_the_history_to_another_browser(server: RunningServer, raw_client: Any) -> None:
    laptop, phone = raw_client(server.url), raw_client(server.url)
    conversation = await chatted(laptop)
    made = await code(laptop)
    assert SHOWN_CODE.fullmatch(made["code"]), made
    assert made["url"] == f"{server.url}/link?code={made['code']}"
    assert made["expiresAt"] > "2000"
    status, body, response = await phone.request("GET", f"/link?code={made['code'].lower()}")
    assert (status, response.headers["Location"]) == (303, f"/#link={made['code']}")
    assert await link(phone, made["code"].lower().replace("-", " ")) == (200, {"linked": True})
    assert await conversations(phone) == [conversation]
    # Both browsers write to the one history.
    status, body, _ = await phone.message(conversation, "And from the phone?")
    assert status == 200, body
    _, read, _ = await laptop.request("GET", f"/api/conversation/{conversation}")
    assert "And from the phone?" in [m["content"] for m in read["messages"]]
    started_on_phone = await phone.create()  # a step that checks its session in its own statement
    assert set(await conversations(laptop)) == {conversation, started_on_phone}
    # The phone's cookie is its own, not the session's id.
    cookies = {c.key: c.value for c in phone.http.cookie_jar}
    assert cookies["hf-chat"] != {c.key: c.value for c in laptop.http.cookie_jar}["hf-chat"]
    assert len(cookies["hf-chat"]) == 48

    status, listed, _ = await phone.request("GET", "/api/devices")
    assert status == 200, listed
    assert [(d["label"], d["current"]) for d in listed] == [
        ("The browser that started this history", False),
        ("Firefox on Android", True),
    ]
    assert all(d["createdAt"] <= d["lastSeen"] for d in listed)
    _, seen_by_laptop, _ = await laptop.request("GET", "/api/devices")
    assert [d["current"] for d in seen_by_laptop] == [True, False]


async def test_a_code_works_once_and_a_new_one_replaces_it(server: RunningServer, raw_client: Any) -> None:
    owner, first, second = raw_client(server.url), raw_client(server.url), raw_client(server.url)
    await chatted(owner)
    made = await code(owner)
    assert (await link(first, made["code"]))[0] == 200
    status, spent = await link(second, made["code"])
    assert status == 404
    old, new = await code(owner), await code(owner)
    status, replaced = await link(second, old["code"])
    assert (status, replaced) == (404, spent)  # the same body whatever made a code useless
    assert (await link(second, new["code"]))[0] == 200
    assert len((await owner.request("GET", "/api/devices"))[1]) == 3


async def test_an_expired_code_links_nothing(tmp_path: Path, raw_client: Any) -> None:
    config = replace(fixed_config(db=str(tmp_path / "d.db"), text="Fine."), device_code_ttl=0.5)
    async with start_server(config) as server:
        owner, other = raw_client(server.url), raw_client(server.url)
        await chatted(owner)
        made = await code(owner)
        await asyncio.sleep(0.6)
        status, body = await link(other, made["code"])
        assert status == 404 and "expired" in body["message"]
        assert await conversations(other) == []


async def test_garbage_and_forged_codes_answer_like_unknown_ones(server: RunningServer, raw_client: Any) -> None:
    owner, guesser = raw_client(server.url), raw_client(server.url)
    await chatted(owner)
    _, unknown = await link(guesser, "ZZZZ-ZZZZ")
    for garbage in ("", "0000-0000", "x" * 10_000, "ABCD-EFGH'; DROP TABLE devices;--", "\u0000\u2028"):
        assert await link(guesser, garbage) == (404, unknown), garbage
    status, body, _ = await guesser.request("POST", "/api/devices/link", json={"code": 12345678})
    assert status == 400 and "code" in body["message"]
    status, body, _ = await guesser.request("POST", "/api/devices/link", json={"code": "ABCD-EFGH", "session": "x"})
    assert status == 400
    # A cookie of a device's shape that no device holds is no session at all.
    forger = raw_client(server.url)
    forger.http.cookie_jar.update_cookies({"hf-chat": "A" * 48})
    assert (await forger.request("GET", "/api/devices"))[0] == 401
    assert (await owner.request("GET", "/api/devices"))[0] == 200


async def test_hostile_user_agents_become_plain_labels(server: RunningServer, raw_client: Any) -> None:
    owner = raw_client(server.url)
    await chatted(owner)
    hostile = ["<img src=x onerror=alert(1)> Firefox/1", 'Chrome/1 (Windows) "</script>"', "A" * 4000, ""]
    for agent in hostile:
        assert (await link(raw_client(server.url), (await code(owner))["code"], agent))[0] == 200
    labels = [d["label"] for d in (await owner.request("GET", "/api/devices"))[1][1:]]
    assert labels == ["Firefox", "Chrome on Windows", "A browser", "A browser"]


async def test_detaching_a_device_ends_its_access_at_once(server: RunningServer, raw_client: Any) -> None:
    laptop, phone = raw_client(server.url), raw_client(server.url)
    conversation = await chatted(laptop)
    assert (await link(phone, (await code(laptop))["code"]))[0] == 200
    phone_id = (await laptop.request("GET", "/api/devices"))[1][1]["id"]
    status, body, _ = await laptop.request("DELETE", f"/api/devices/{phone_id}")
    assert (status, body) == (200, {"detached": phone_id, "current": False})
    assert await conversations(phone) == []  # a fresh visitor
    assert (await phone.request("GET", f"/api/conversation/{conversation}"))[0] == 404
    assert (await laptop.request("DELETE", f"/api/devices/{phone_id}"))[0] == 404
    assert await conversations(laptop) == [conversation]


async def test_detaching_the_current_browser_logs_it_out(server: RunningServer, raw_client: Any) -> None:
    laptop, phone = raw_client(server.url), raw_client(server.url)
    conversation = await chatted(laptop)
    assert (await link(phone, (await code(laptop))["code"]))[0] == 200
    phone_id = next(d["id"] for d in (await phone.request("GET", "/api/devices"))[1] if d["current"])
    status, body, response = await phone.request("DELETE", f"/api/devices/{phone_id}")
    assert status == 200 and body["current"] is True and "detached" in body["message"]
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert await conversations(phone) == []
    # The first browser leaves too: the session moves to a fresh id, which a linked device follows.
    other = raw_client(server.url)
    assert (await link(other, (await code(laptop))["code"]))[0] == 200
    old_cookie = {c.key: c.value for c in laptop.http.cookie_jar}["hf-chat"]
    status, body, _ = await laptop.request("DELETE", "/api/devices/first")
    assert status == 200 and body["current"] is True
    stale = raw_client(server.url)
    stale.http.cookie_jar.update_cookies({"hf-chat": old_cookie})
    assert await conversations(stale) == []
    assert await conversations(other) == [conversation]
    assert [d["current"] for d in (await other.request("GET", "/api/devices"))[1]] == [False, True]


async def test_no_history_no_code(server: RunningServer, raw_client: Any) -> None:
    stranger = raw_client(server.url)
    for method, path in (("POST", "/api/devices/code"), ("GET", "/api/devices"), ("DELETE", "/api/devices/first")):
        status, body, response = await stranger.request(method, path, json={} if method == "POST" else None)
        assert status == 401 and "history" in body["message"], (path, body)
        assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize(
    ("per_address", "in_all", "words"), [(5, 0, "per minute per client address"), (0, 5, "per minute in all")]
)
async def test_a_flood_of_guesses_is_cut(
    tmp_path: Path, raw_client: Any, per_address: int, in_all: int, words: str
) -> None:
    """Per client address, and from every address together (0: that limit off, so the other one shows)."""
    config = replace(
        fixed_config(db=str(tmp_path / "d.db"), text="Fine."),
        device_links_per_minute=per_address,
        device_links_per_minute_all=in_all,
    )
    async with start_server(config) as server:
        owner = raw_client(server.url)
        await chatted(owner)
        made = await code(owner)
        guessers = [raw_client(server.url) for _ in range(3)]
        tries = [link(guessers[n % 3], f"ZZZZ-ZZZ{c}") for n, c in enumerate("2345678")]
        statuses = [(await attempt)[0] for attempt in tries]
        assert statuses == [404] * 5 + [429] * 2
        # The right code is refused too while the limit holds: guessing on cannot find it.
        status, body, response = await owner.request("POST", "/api/devices/link", json={"code": made["code"]})
        assert status == 429 and words in body["message"], body
        assert 0 < int(response.headers["Retry-After"]) <= 60
        assert [d["id"] for d in (await owner.request("GET", "/api/devices"))[1]] == ["first"]
