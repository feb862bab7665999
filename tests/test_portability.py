"""Export everything and import over HTTP (issue 23, "Export everything", "Import").

Real loopback HTTP against the project's server on the fixed backend (echo: each answer repeats its
question), SQLite files; a second server is the "fresh server" an export is carried to.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace

from h2ochat.server import RunningServer, start_server
from tests.helpers import RawClient, fixed_config

FIXTURE = Path(__file__).parent / "fixtures" / "chatgpt_conversations.json"


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, RunningServer]]:
    async with (
        start_server(fixed_config(db=str(tmp_path / "a.db"), echo=True)) as first,
        start_server(fixed_config(db=str(tmp_path / "b.db"), echo=True)) as second,
    ):
        yield first, second


async def history(client: RawClient) -> list[str]:
    """Two conversations, one with a branch (an edited first question) and a vote: their ids."""
    await client.accept()
    first = await client.create()
    asked = client.message_body("one")
    assert (await client.request("POST", f"/conversation/{first}", json=asked))[0] == 200
    await client.message(first, "two")
    again = client.message_body("again")
    again["options"].update(id=asked["options"]["id"], is_retry=True)
    assert (await client.request("POST", f"/conversation/{first}", json=again))[0] == 200
    assert (await client.request("PATCH", f"/conversation/{first}", json={"title": "Branches"}))[0] == 200
    second = await client.create()
    reply = client.message_body("hello")
    assert (await client.request("POST", f"/conversation/{second}", json=reply))[0] == 200
    vote = f"/conversation/{second}/message/{reply['options']['response_id']}/vote"
    assert (await client.request("POST", vote, json={"score": 1}))[0] == 200
    return [first, second]


async def export(client: RawClient) -> tuple[zipfile.ZipFile, bytes]:
    status, body, response = await client.request("GET", "/api/export")
    assert status == 200 and response.content_type == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(body))
    return archive, archive.read("h2ochat-export.json")


async def upload(client: RawClient, body: bytes) -> tuple[int, Any]:
    headers = {"Content-Type": "application/zip" if body[:2] == b"PK" else "application/json"}
    status, answer, _ = await client.request("POST", "/api/import", data=io.BytesIO(body), headers=headers)
    return status, answer


def mapped(raw: bytes, ids: dict[str, str]) -> bytes:
    """The export's own bytes with its conversations' ids replaced as ``ids`` says and its export time
    blanked: what must be equal, byte for byte, after a round trip."""
    for new, old in ids.items():
        assert raw.count(f'"id": "{new}"'.encode()) == 1  # a conversation's id, nowhere else
        raw = raw.replace(f'"id": "{new}"'.encode(), f'"id": "{old}"'.encode())
    return re.sub(rb'"exportedAt": "[^"]*"', b'"exportedAt": "-"', raw, count=1)


async def test_export_then_import_into_a_fresh_server_gives_the_same_bytes(
    servers: tuple[RunningServer, RunningServer], raw_client: Any
) -> None:
    first, second = servers
    owner = raw_client(first.url)
    ids = await history(owner)
    archive, raw = await export(owner)
    data = json.loads(raw)
    assert (data["format"], data["version"]) == ("h2ochat-export", 1)
    assert [c["id"] for c in data["conversations"]] == ids
    branches = data["conversations"][0]
    assert [m["content"] for m in branches["messages"]] == ["", "one", "one", "two", "two", "again", "again"]
    assert [c["messages"][-1]["score"] for c in data["conversations"]] == [0, 1]
    markdown = sorted(name for name in archive.namelist() if name.endswith(".md"))
    assert markdown == sorted([f"branches-{ids[0]}.md", f"new-chat-{ids[1]}.md"])
    assert archive.read(f"branches-{ids[0]}.md").decode().startswith("# Branches\n\nModel: ")
    assert "## You\n\nagain\n" in archive.read(f"branches-{ids[0]}.md").decode()

    newcomer = raw_client(second.url)  # no cookie: the import starts a session
    status, answer = await upload(newcomer, archive.fp.getvalue())  # type: ignore[union-attr]
    assert status == 200, answer
    assert (answer["imported"], answer["skipped"]) == (2, 0)
    assert not set(answer["conversations"]) & set(ids)  # new ids
    _, again = await export(newcomer)
    assert mapped(again, dict(zip(answer["conversations"], ids, strict=True))) == mapped(raw, {})
    listed = (await newcomer.request("GET", "/api/conversations"))[1]
    assert {c["id"] for c in listed} >= set(answer["conversations"])

    status, twice = await upload(newcomer, raw)  # the JSON alone, a second time: nothing new
    assert status == 200 and (twice["imported"], twice["skipped"], twice["conversations"]) == (0, 2, [])
    assert len(json.loads((await export(newcomer))[1])["conversations"]) == 2


async def test_a_chatgpt_export_imports_with_its_branches(
    servers: tuple[RunningServer, RunningServer], raw_client: Any
) -> None:
    client = raw_client(servers[0].url)
    status, answer = await upload(client, FIXTURE.read_bytes())
    assert status == 200 and answer["imported"] == 2, answer
    lyon = answer["conversations"][0]
    _, read, _ = await client.request("GET", f"/api/conversation/{lyon}")
    assert read["title"] == "Packing for Lyon"
    contents = [m["content"] for m in read["messages"]]
    assert contents[0] == "You are a travel helper." and "And shoes?" in contents and "And the weather?" in contents
    active = next(m for m in read["messages"] if m["id"] == read["activeMessageId"])
    assert active["content"] == "Walking shoes."
    assert (await upload(client, FIXTURE.read_bytes()))[1]["skipped"] == 2
    # ChatGPT's own zip: conversations.json among its other files (left unread): the same conversations.
    archive = zipped(**{"chat.html": b"<html>", "dalle__image.webp": b"\0", "conversations.json": FIXTURE.read_bytes()})
    status, answer = await upload(client, archive)
    assert status == 200 and (answer["imported"], answer["skipped"]) == (0, 2), answer


def zipped(**members: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name.replace("__", "/"), data)
    return out.getvalue()


def bomb() -> bytes:
    """A small zip whose JSON unpacks far past the limit."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("h2ochat-export.json", b'{"format": "h2ochat-export", "version": 1, "x": "' + b" " * (8 << 20))
    return out.getvalue()


GOOD = b'{"format": "h2ochat-export", "version": 1, "exportedAt": "x", "conversations": []}'


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"PK\x03\x04 broken zip", 400, "not a readable zip"),
        (bomb(), 413, "unpacks to more than"),
        (zipped(**{"..__evil.json": b"{}", "h2ochat-export.json": GOOD}), 400, "outside any export's layout"),
        (zipped(**{"__abs.md": b"", "h2ochat-export.json": GOOD}), 400, "outside any export's layout"),
        (zipped(**{"notes.md": b"hi"}), 400, "holds neither"),
        (GOOD.replace(b'"version": 1', b'"version": 9'), 400, "version 9"),
        (b'{"format": "h2ochat-export", "version": 1, "conversations": []}', 400, "exportedAt"),
        (b"{", 400, "not an h2ochat export"),
        (b"   ", 400, "no body"),
        (b" " * (2 << 20), 413, "max_import_bytes"),
    ],
)
async def test_hostile_or_malformed_files_are_refused_whole(
    tmp_path: Path, raw_client: Any, body: bytes, status: int, words: str
) -> None:
    config = replace(fixed_config(db=str(tmp_path / "h.db"), echo=True), max_import_bytes=1 << 20)
    async with start_server(config) as server:
        client = raw_client(server.url)
        await history(client)
        before = json.loads((await export(client))[1])["conversations"]
        got, answer = await upload(client, body)
        assert got == status and words in answer["message"], answer
        assert json.loads((await export(client))[1])["conversations"] == before


async def test_one_bad_conversation_refuses_the_whole_file_and_limits_count(tmp_path: Path, raw_client: Any) -> None:
    config = replace(
        fixed_config(db=str(tmp_path / "l.db"), echo=True), max_import_conversations=1, max_conversations=3
    )
    async with start_server(config) as server:
        client = raw_client(server.url)
        await history(client)
        _, raw = await export(client)
        data = json.loads(raw)
        status, answer = await upload(client, raw)
        assert status == 413 and "max_import_conversations" in answer["message"]
        good, bad = data["conversations"]
        bad["messages"][1]["parent"] = "nowhere"
        data["conversations"] = [bad]
        status, answer = await upload(client, json.dumps(data).encode())
        assert status == 400 and "parent comes before it" in answer["message"]
        data["conversations"] = [good]
        good["title"] = "changed"  # another conversation: imported, past max_conversations on the next
        assert (await upload(client, json.dumps(data).encode()))[0] == 200
        good["title"] = "changed again"
        status, answer = await upload(client, json.dumps(data).encode())
        assert status == 409 and "3 conversations" in answer["message"]
        assert len(json.loads((await export(client))[1])["conversations"]) == 3


async def test_without_a_session_the_export_is_empty(
    servers: tuple[RunningServer, RunningServer], raw_client: Any
) -> None:
    archive, raw = await export(raw_client(servers[0].url))
    assert json.loads(raw)["conversations"] == [] and archive.namelist() == ["h2ochat-export.json"]


async def test_a_body_sent_in_chunks_is_cut_at_the_limit_and_cross_site_imports_are_refused(
    tmp_path: Path, raw_client: Any
) -> None:
    config = replace(fixed_config(db=str(tmp_path / "c.db"), echo=True), max_import_bytes=1 << 20)
    async with start_server(config) as server:
        client = raw_client(server.url)
        sent = 0

        async def endless() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            nonlocal sent
            while sent < 64 << 20:
                sent += 1 << 16
                yield b" " * (1 << 16)

        headers = {"Content-Type": "application/json"}
        status, answer, _ = await client.request("POST", "/api/import", data=endless(), headers=headers)
        assert status == 413 and "max_import_bytes" in answer["message"]
        assert sent < 16 << 20  # refused long before the end
        hostile = {"Content-Type": "application/zip", "Origin": "http://evil.example"}
        status, answer, _ = await client.request("POST", "/api/import", data=GOOD, headers=hostile)
        assert status == 403 and "Cross-origin" in answer["message"]
        other = {"Content-Type": "application/zip"}  # a zip elsewhere: JSON is asked for, as before
        status, answer, _ = await client.request("POST", "/conversation", data=GOOD, headers=other)
        assert status == 415
