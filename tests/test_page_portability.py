"""Export all and Import in Chromium (issue 23): export a session's history from one server, import it
into a fresh server in a fresh browser context, and compare (the JSON, byte for byte, once the
conversations' ids and the export time are mapped)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser import Served, fixed_toml, wait_answer
from tests.test_page_a11y import serious
from tests.test_portability import mapped


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A second server, with a database of its own: where the history is carried."""
    directory = tmp_path_factory.mktemp("fresh")
    config = directory / "models.toml"
    config.write_text(fixed_toml(), encoding="utf-8")
    served = Served(["--config", str(config), "--db", str(directory / "fresh.db")]).start()
    yield served
    served.stop()


def send(page: Page, text: str) -> None:
    box = page.get_by_role("textbox", name="Message")
    box.fill(text)
    box.press("Enter")
    wait_answer(page)


def export_all(page: Page, path: Path) -> bytes:
    with page.expect_download() as download:
        page.get_by_role("link", name="Export all").click()
    download.value.save_as(path)
    return zipfile.ZipFile(path).read("h2ochat-export.json")


def import_file(page: Page, path: Path) -> Any:
    page.get_by_role("button", name="Import", exact=True).click()
    dialog = page.get_by_role("dialog", name="Import conversations")
    dialog.get_by_label("File").set_input_files(path)
    dialog.get_by_role("button", name="Import", exact=True).click()
    return dialog


def test_export_all_then_import_into_a_fresh_server(
    page_server: Served, fresh_server: Served, visit: Any, tmp_path: Path
) -> None:
    owner = visit(page_server.url)
    send(owner.page, "Where should I go in May?")
    send(owner.page, "And in June?")
    first = export_all(owner.page, tmp_path / "first.zip")
    assert owner.watcher.errors == []

    newcomer = visit(fresh_server.url)
    page = newcomer.page
    dialog = import_file(page, tmp_path / "first.zip")
    expect(dialog.get_by_role("status")).to_have_text("1 conversation imported; 0 were already here.")
    assert serious(page, "import dialog") == []
    dialog.get_by_role("button", name="Close").click()
    expect(page.locator("li.conversation")).to_have_count(1)  # the sidebar lists it at once
    page.locator("li.conversation").first.click()
    expect(page.get_by_role("article", name="You").last).to_contain_text("And in June?")

    again = export_all(page, tmp_path / "again.zip")
    old, new = json.loads(first)["conversations"], json.loads(again)["conversations"]
    assert len(old) == len(new) == 1
    assert mapped(again, {new[0]["id"]: old[0]["id"]}) == mapped(first, {})

    dialog = import_file(page, tmp_path / "first.zip")  # twice: nothing added
    expect(dialog.get_by_role("status")).to_have_text("0 conversations imported; 1 was already here.")
    dialog.get_by_role("button", name="Close").click()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "h2ochat-export", "version": 2}')
    dialog = import_file(page, bad)
    expect(dialog.get_by_role("alert")).to_contain_text("The export is version 2")
    expect(page.locator("li.conversation")).to_have_count(1)
    # The refused import's 400 is the one error the console may show.
    assert [e for e in newcomer.watcher.errors if "status of 400" not in e] == []
