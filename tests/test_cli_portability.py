"""``h2ochat export`` and ``h2ochat import`` run as a user runs them (subprocesses), against a running
server (--url) and against the database alone (--db), issue 23's command line."""

from __future__ import annotations

import asyncio
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from h2ochat.server import start_server
from tests.helpers import fixed_config
from tests.test_cli import h2ochat
from tests.test_portability import export, history, mapped

FIXTURE = Path(__file__).parent / "fixtures" / "chatgpt_conversations.json"


def session_printed(stdout: str) -> str:
    found = re.search(r"Session: (\S+)", stdout)
    assert found, stdout
    return found.group(1)


def exported(path: Path) -> bytes:
    return zipfile.ZipFile(path).read("h2ochat-export.json")


async def test_export_and_import_through_running_servers(tmp_path: Path, raw_client: Any) -> None:
    async with (
        start_server(fixed_config(db=str(tmp_path / "a.db"), echo=True)) as first,
        start_server(fixed_config(db=str(tmp_path / "b.db"), echo=True)) as second,
    ):
        owner = raw_client(first.url)
        ids = await history(owner)
        cookie = next(c.value for c in owner.http.cookie_jar if c.key == "hf-chat")
        _, by_http = await export(owner)
        out = tmp_path / "out.zip"
        done = await asyncio.to_thread(h2ochat, "export", str(out), "--url", first.url, "--session", cookie)
        assert done.returncode == 0, done.stderr
        assert mapped(exported(out), {}) == mapped(by_http, {})

        done = await asyncio.to_thread(h2ochat, "import", str(out), "--url", second.url)
        assert done.returncode == 0, done.stderr
        assert "Imported 2 conversations; 0 were there already." in done.stdout
        fresh = session_printed(done.stdout)
        back = tmp_path / "back.zip"
        done = await asyncio.to_thread(h2ochat, "export", str(back), "--url", second.url, "--session", fresh)
        assert done.returncode == 0, done.stderr
        new_ids = [c["id"] for c in json.loads(exported(back))["conversations"]]
        assert mapped(exported(back), dict(zip(new_ids, ids, strict=True))) == mapped(by_http, {})

        done = await asyncio.to_thread(h2ochat, "import", str(out), "--url", second.url, "--session", fresh)
        assert "Imported 0 conversations; 2 were there already." in done.stdout
        bad = tmp_path / "bad.json"
        bad.write_text('{"format": "h2ochat-export", "version": 7}')
        done = await asyncio.to_thread(h2ochat, "import", str(bad), "--url", second.url, "--session", fresh)
        assert done.returncode != 0 and "version 7" in done.stderr


def test_export_and_import_with_the_database_alone(tmp_path: Path) -> None:
    db = str(tmp_path / "local.db")
    done = h2ochat("import", str(FIXTURE), "--db", db)
    assert done.returncode == 0, done.stderr
    assert "Imported 2 conversations; 0 were there already." in done.stdout
    session = session_printed(done.stdout)
    out = tmp_path / "local.zip"
    done = h2ochat("export", str(out), "--db", db, "--session", session)
    assert done.returncode == 0, done.stderr
    titles = [c["title"] for c in json.loads(exported(out))["conversations"]]
    assert titles == ["Packing for Lyon", "Imported chat"]
    done = h2ochat("import", str(FIXTURE), "--db", db, "--session", session)
    assert "Imported 0 conversations; 2 were there already." in done.stdout
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 nothing")
    done = h2ochat("import", str(tmp_path / "bad.zip"), "--db", db, "--session", session)
    assert done.returncode == 1 and "not a readable zip" in done.stderr
    done = h2ochat("export", str(out), "--db", db)
    assert done.returncode != 0 and "--session" in done.stderr
