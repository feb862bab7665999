"""Shared links over HTTP (issue 23, "Sharing"): make, read without a cookie, continue, list, revoke, expire.

Real loopback HTTP against the project's server on the fixed backend, with a SQLite file where a test
reaches past the server (to let a link expire).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from h2ochat.server import RunningServer, start_server
from h2ochat.server.edge.http import CONFIG
from reliability.shares import dead_links
from tests.helpers import FIXED_MODEL, RawClient, fixed_config

ANSWER = "Lyon is **lovely** in May."
URL_SAFE_22 = re.compile(r"[A-Za-z0-9_-]{22}")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with start_server(fixed_config(db=str(tmp_path / "share.db"), text=ANSWER)) as running:
        yield running


async def chatted(client: RawClient, question: str = "Where should I go in May?") -> str:
    """An accepted session with one finished exchange: the conversation's id."""
    await client.accept()
    conversation = await client.create()
    status, body, _ = await client.message(conversation, question)
    assert status == 200, body
    return conversation


async def share(client: RawClient, conversation: str, **body: Any) -> tuple[int, Any]:
    status, answer, _ = await client.request("POST", f"/conversation/{conversation}/share", json=body)
    return status, answer


async def read(client: RawClient, share_id: str) -> tuple[int, Any]:
    status, body, _ = await client.request("GET", f"/api/v2/conversations/{share_id}")
    return status, body


async def test_anyone_with_the_id_reads_the_snapshot_without_a_cookie(server: RunningServer, raw_client: Any) -> None:
    owner, stranger = raw_client(server.url), raw_client(server.url)
    conversation = await chatted(owner)
    await owner.request("PATCH", f"/conversation/{conversation}", json={"title": "May in Lyon"})
    status, made = await share(owner, conversation)
    assert status == 200, made
    share_id = made["shareId"]
    assert URL_SAFE_22.fullmatch(share_id)
    assert made["url"] == f"{server.url}/r/{share_id}"
    assert (await share(owner, conversation))[1]["shareId"] == share_id  # unchanged: the same link

    status, body, response = await stranger.request("GET", f"/api/v2/conversations/{share_id}")
    assert status == 200, body
    assert "Set-Cookie" not in response.headers  # a reader gets no session
    document = body["json"]
    assert (document["id"], document["title"], document["model"], document["shared"]) == (
        share_id,
        "May in Lyon",
        FIXED_MODEL,
        True,
    )
    assert [(m["from"], m["content"]) for m in document["messages"]] == [
        ("system", ""),
        ("user", "Where should I go in May?"),
        ("assistant", ANSWER),
    ]
    _, owners, _ = await owner.request("GET", f"/api/conversation/{conversation}")
    assert not {m["id"] for m in owners["messages"]} & {m["id"] for m in document["messages"]}

    # The owner goes on and then deletes the conversation: the link still shows the snapshot.
    await owner.message(conversation, "And in June?")
    status, later = await share(owner, conversation)
    assert status == 200 and later["shareId"] != share_id
    status, _, _ = await owner.request("DELETE", f"/conversation/{conversation}")
    assert status == 200
    status, body = await read(stranger, share_id)
    assert status == 200 and len(body["json"]["messages"]) == 3
    status, listed, _ = await owner.request("GET", "/api/shares")
    assert status == 200
    assert [(s["shareId"], s["conversationId"], s["expiresAt"]) for s in listed] == [
        (later["shareId"], conversation, None),
        (share_id, conversation, None),
    ]
    assert (await stranger.request("GET", "/api/shares"))[1] == []  # another session's links are not listed
    # chat-ui shows a share at /conversation/<shareId>: such a link leads to the share's page.
    status, _, response = await stranger.request("GET", f"/conversation/{share_id}")
    assert status == 302 and response.headers["Location"] == f"/r/{share_id}"


async def test_revoked_expired_and_unknown_links_answer_exactly_alike(server: RunningServer, raw_client: Any) -> None:
    owner, stranger = raw_client(server.url), raw_client(server.url)
    conversation = await chatted(owner)
    _, revoked = await share(owner, conversation)
    _, expiring = await share(owner, conversation, expires_in_days=1)
    assert expiring["shareId"] != revoked["shareId"]

    # Only the owner revokes; a stranger's attempt reads as a link that does not exist.
    missing = await stranger.request("DELETE", f"/api/shares/{revoked['shareId']}")
    unknown = await stranger.request("DELETE", "/api/shares/" + "Z" * 22)
    assert missing[0] == unknown[0] == 404
    assert missing[1]["message"].replace(revoked["shareId"], "Z" * 22) == unknown[1]["message"]
    assert (await owner.request("DELETE", f"/api/shares/{revoked['shareId']}"))[0] == 200
    with closing(sqlite3.connect(server.app[CONFIG].db_path())) as db, db:
        db.execute("UPDATE shares SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", (expiring["shareId"],))

    gone = [revoked["shareId"], expiring["shareId"], "Q" * 22]
    for path in ("/api/v2/conversations/{}", "/r/{}"):
        answers = [await stranger.request("GET", path.format(share_id)) for share_id in gone]
        assert {status for status, _, _ in answers} == {404}
        assert len({body if isinstance(body, bytes) else repr(body) for _, body, _ in answers}) == 1, path
    refusals = [
        await stranger.request("POST", "/conversation", json={"model": FIXED_MODEL, "fromShare": share_id})
        for share_id in gone
    ]
    assert {status for status, _, _ in refusals} == {404}
    assert (
        len({body["message"].replace(share_id, "ID") for (_, body, _), share_id in zip(refusals, gone, strict=True)})
        == 1
    )
    assert (await owner.request("GET", "/api/shares"))[1] == []


async def test_continuing_a_share_starts_the_readers_own_conversation(server: RunningServer, raw_client: Any) -> None:
    owner, reader = raw_client(server.url), raw_client(server.url)
    conversation = await chatted(owner)
    _, made = await share(owner, conversation)
    status, body, response = await reader.request(
        "POST", "/conversation", json={"model": FIXED_MODEL, "fromShare": made["shareId"]}
    )
    assert status == 200, body
    assert "hf-chat=" in response.headers.get("Set-Cookie", "")  # a session was started for the reader
    copy = body["conversationId"]
    assert copy != conversation and re.fullmatch(r"[0-9a-f]{24}", copy)
    assert '"shared":false' in body["conversation"].replace(" ", "")
    await reader.accept()  # the welcome gate still guards the reader's own messages
    status, _, _ = await reader.message(copy, "Thanks! And Paris?")
    assert status == 200
    _, mine, _ = await reader.request("GET", f"/api/conversation/{copy}")
    assert [m["content"] for m in mine["messages"]] == [
        "",
        "Where should I go in May?",
        ANSWER,
        "Thanks! And Paris?",
        ANSWER,
    ]
    assert (await owner.request("GET", f"/api/conversation/{copy}"))[0] == 404  # the copy is the reader's alone
    assert len((await read(reader, made["shareId"]))[1]["json"]["messages"]) == 3  # the share did not grow

    status, body, _ = await reader.request(
        "POST", "/conversation", json={"model": FIXED_MODEL, "fromShare": made["shareId"], "preprompt": "x"}
    )
    assert status == 400 and "preprompt or fromShare" in body["message"]


@pytest.mark.parametrize("days", [0, 366, -1, "7", 1.5, True, [1]])
async def test_a_bad_expiry_is_refused_saying_what_is_allowed(
    server: RunningServer, raw_client: Any, days: object
) -> None:
    owner = raw_client(server.url)
    conversation = await chatted(owner)
    status, body = await share(owner, conversation, expires_in_days=days)
    assert status == 400
    assert "expires_in_days must be a whole number of days from 1 to 365" in body["message"]
    assert (await owner.request("GET", "/api/shares"))[1] == []


async def test_an_expiry_dates_the_link_and_other_refusals_say_why(server: RunningServer, raw_client: Any) -> None:
    owner, stranger = raw_client(server.url), raw_client(server.url)
    conversation = await chatted(owner)
    assert (await share(owner, conversation, expires_in_days=7))[0] == 200
    _, listed, _ = await owner.request("GET", "/api/shares")
    created, expires = listed[0]["createdAt"], listed[0]["expiresAt"]
    assert expires[:10] > created[:10] and int(expires[8:10]) != int(created[8:10])
    assert (await share(owner, conversation, expiry=3))[0] == 400  # an unknown field
    assert (await share(stranger, conversation))[0] == 404  # another session's conversation is missing
    empty = await owner.create()
    status, body = await share(owner, empty)
    assert status == 400 and "no message yet" in body["message"]
    # A write like the others: a cross-site form is refused.
    status, _, _ = await owner.request(
        "POST", f"/conversation/{conversation}/share", headers={"Origin": "https://evil.example"}, json={}
    )
    assert status == 403
    status, _, _ = await owner.request(
        "POST", f"/conversation/{conversation}/share", data="x", headers={"Content-Type": "text/xml"}
    )
    assert status == 415


async def test_the_page_of_a_share_is_read_only_noindex_and_escaped(server: RunningServer, raw_client: Any) -> None:
    owner, stranger = raw_client(server.url), raw_client(server.url)
    conversation = await chatted(owner, question='<script>alert("x")</script> & "quotes"')
    title = 'Tom & "Jerry" <b>__SHARE__</b>'
    await owner.request("PATCH", f"/conversation/{conversation}", json={"title": title})
    _, made = await share(owner, conversation)
    status, body, response = await stranger.request("GET", f"/r/{made['shareId']}")
    assert status == 200
    page = body.decode()
    assert "Set-Cookie" not in response.headers
    assert response.headers["X-Robots-Tag"] == "noindex"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert '<meta name="robots" content="noindex">' in page
    escaped_title = "Tom &amp; &quot;Jerry&quot; &lt;b&gt;__SHARE__&lt;/b&gt;"
    assert f'<meta property="og:title" content="{escaped_title}">' in page
    assert '<meta property="og:description" content="&lt;script&gt;alert(&quot;x&quot;)' in page
    assert "<script>alert" not in page and "<b>" not in page
    assert page.count("<script") == 1  # the page's own module, nothing inline
    assert conversation not in page  # nothing of the owner's


async def test_a_session_holds_at_most_max_conversations_links(tmp_path: Path, raw_client: Any) -> None:
    config = fixed_config(db=str(tmp_path / "cap.db"), text=ANSWER)
    config = msgspec.structs.replace(config, max_conversations=1)
    async with start_server(config) as running:
        owner = raw_client(running.url)
        conversation = await chatted(owner)
        assert (await share(owner, conversation))[0] == 200
        await owner.message(conversation, "more")
        status, body = await share(owner, conversation)
        assert status == 409 and "already has 1 shared links" in body["message"]


async def test_dead_links_answer_alike_in_the_reliability_check() -> None:
    """The reliability script's run, briefly: the same 404 and body for every kind of dead link (its
    timing comparison is for the long run, python -m reliability.shares, not for a unit test)."""
    result = await dead_links(rounds=3)
    assert result.alike, (result.statuses, result.bodies)
    assert set(result.medians) == {"/r/{}", "/api/v2/conversations/{}"}


def test_the_share_page_preloads_every_module_it_imports() -> None:
    """As the chat page does (tests/test_page.py): the browser fetches them at once."""
    from h2ochat.server.web.page import STATIC

    page = (STATIC / "shared.html").read_text(encoding="utf-8")
    script = (STATIC / "shared.js").read_text(encoding="utf-8")
    imported = re.findall(r'from "\./([\w./-]+)"', script)
    assert imported and all(f'<link rel="modulepreload" href="static/{m}">' in page for m in imported)
    for module in ("markdown.js",):  # and what they import in turn
        nested = re.findall(r'from "\./([\w./-]+)"', (STATIC / module).read_text(encoding="utf-8"))
        assert all(f'<link rel="modulepreload" href="static/{m}">' in page for m in nested)


async def test_links_live_under_the_base_path(tmp_path: Path, raw_client: Any) -> None:
    config = msgspec.structs.replace(fixed_config(db=str(tmp_path / "base.db"), text=ANSWER), base_path="/chat")
    async with start_server(config) as running:
        owner, reader = raw_client(running.url), raw_client(running.url)
        conversation = await chatted(owner)
        _, made = await share(owner, conversation)
        assert made["url"] == f"{running.url}/r/{made['shareId']}" and "/chat/r/" in made["url"]
        status, page, _ = await reader.request("GET", f"/r/{made['shareId']}")
        assert status == 200 and '<base href="/chat/">' in page.decode()
        status, _, response = await reader.request("GET", f"/conversation/{made['shareId']}")
        assert status == 302 and response.headers["Location"] == f"/chat/r/{made['shareId']}"
        status, missing, _ = await reader.request("GET", "/r/" + "M" * 22)
        assert status == 404 and '<base href="/chat/">' in missing.decode()
