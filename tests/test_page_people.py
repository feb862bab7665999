"""A person on the page in Chromium (issue 24): signed in through the identity proxy's header, they
see their name, make an API key in the dialog (shown once), use it from a program, and revoke it; an
admin finds the use by person; an anonymous visitor sees none of it."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.browser import ARTIFACTS, Served, fixed_toml, wait_answer
from tests.test_page_a11y import serious

PROXY = {"X-Forwarded-Email": "alice@example.com", "X-Forwarded-User": "Alice Liddell"}


@pytest.fixture(scope="module")
def people_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("people")
    config = directory / "models.toml"
    server = {
        "trusted_user_header": "X-Forwarded-Email",
        "trusted_name_header": "X-Forwarded-User",
        "forwarded_allow_ips": ["127.0.0.1"],
        "admins": ["root@example.com"],
    }
    config.write_text(fixed_toml(**server), encoding="utf-8")
    served = Served(["--config", str(config), "--db", str(directory / "people.db")]).start()
    yield served
    served.stop()


def models_status(url: str, key: str) -> int:
    request = urllib.request.Request(url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            json.load(response)
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def test_a_person_makes_uses_and_revokes_a_key(people_server: Served, visit: object) -> None:
    alice = visit(people_server.url, extra_http_headers=PROXY)  # type: ignore[operator]
    page = alice.page
    expect(page.get_by_text("Signed in as Alice Liddell")).to_be_visible()
    expect(page.get_by_role("link", name="Use by person")).to_be_hidden()  # not an admin
    box = page.get_by_role("textbox", name="Message")
    box.fill("Hello")
    box.press("Enter")
    wait_answer(page)

    page.get_by_role("button", name="API keys").click()
    dialog = page.get_by_role("dialog", name="API keys")
    expect(dialog).to_be_visible()
    dialog.get_by_role("textbox", name="Name of a new key").fill("laptop")
    dialog.get_by_role("button", name="Make a key").click()
    shown = dialog.get_by_role("textbox", name=re.compile("Your new key"))
    expect(shown).to_have_value(re.compile(r"^h2o_[A-Za-z0-9_-]{43}$"))
    key = shown.input_value()
    expect(dialog.get_by_role("button", name=re.compile(r"^Revoke laptop"))).to_have_count(1)
    found = serious(page, "API keys dialog")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "api-keys-dialog.png")
    assert models_status(people_server.url, key) == 200

    dialog.get_by_role("button", name=re.compile(r"^Revoke laptop")).click()
    expect(dialog.get_by_text(re.compile(r"^Revoked "))).to_be_visible()
    expect(dialog.get_by_role("button", name=re.compile(r"^Revoke"))).to_have_count(0)
    assert models_status(people_server.url, key) == 401
    dialog.get_by_role("textbox", name="Name of a new key").fill("\t")
    dialog.get_by_role("button", name="Make a key").click()
    expect(dialog.get_by_role("alert")).to_contain_text("1 to 100 printable characters")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    # Reopened, the dialog shows no key: it was shown once.
    page.get_by_role("button", name="API keys").click()
    expect(dialog.get_by_role("textbox", name=re.compile("Your new key"))).to_be_hidden()
    assert found == [] and alice.watcher.dialogs == []
    assert alice.watcher.errors == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]


def test_an_admin_finds_the_use_by_person(people_server: Served, visit: object) -> None:
    root = visit(people_server.url, extra_http_headers={"X-Forwarded-Email": "root@example.com"})  # type: ignore[operator]
    page = root.page
    expect(page.get_by_text("Signed in as root@example.com")).to_be_visible()
    page.get_by_role("link", name="Use by person").click()
    page.wait_for_url("**/admin/usage")
    expect(page.get_by_role("heading", name="Use by person")).to_be_visible()
    expect(page.get_by_role("rowheader", name=re.compile("alice@example.com"))).to_be_visible()
    found = serious(page, "use by person")
    assert found == [] and root.watcher.errors == []


def test_an_anonymous_visitor_sees_no_person(people_server: Served, visit: object) -> None:
    anonymous = visit(people_server.url)  # type: ignore[operator]
    page = anonymous.page
    expect(page.locator("#person")).to_be_hidden()
    expect(page.get_by_role("button", name="API keys")).to_be_hidden()
    assert anonymous.watcher.errors == []
