"""Sign-in with OpenID Connect in Chromium (issue 24): a visitor chats, signs in through a real provider's
own form (``oidc-provider-mock``), finds the conversation kept, signs out, and a second browser signing
in as the same person finds the same conversation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from h2ochat.server.web.oidc import SECRET_ENV
from tests.browser import ARTIFACTS, Served, fixed_toml, wait_answer
from tests.test_page_a11y import serious

oidc_provider_mock = pytest.importorskip("oidc_provider_mock")
pytestmark = [
    pytest.mark.filterwarnings("ignore::authlib.deprecate.AuthlibDeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:authlib"),
]


@pytest.fixture(scope="module")
def login_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with oidc_provider_mock.run_server_in_thread() as provider:
        directory = tmp_path_factory.mktemp("login")
        config = directory / "models.toml"
        issuer = f"http://localhost:{provider.server_port}"
        config.write_text(fixed_toml(oidc_issuer=issuer, oidc_client_id="h2ochat"), encoding="utf-8")
        os.environ[SECRET_ENV] = "a-secret-the-provider-takes"
        try:
            served = Served(["--config", str(config), "--db", str(directory / "login.db")]).start()
        finally:
            del os.environ[SECRET_ENV]
        yield served
        served.stop()


def sign_in(page: Page, sub: str) -> None:
    page.get_by_role("link", name="Sign in").click()
    page.get_by_placeholder("sub").fill(sub)
    page.get_by_role("button", name="Authorize", exact=True).click()  # not "Authorize as …" (newer versions)
    page.wait_for_selector("body[data-ready]")
    expect(page.get_by_text(f"Signed in as {sub}")).to_be_visible()


def test_sign_in_keeps_the_conversation_and_follows_the_person(login_server: Served, visit: Any) -> None:
    first = visit(login_server.url)
    page = first.page
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    box = page.get_by_role("textbox", name="Message")
    box.fill("Remember the tulips")
    box.press("Enter")
    wait_answer(page)
    page.wait_for_url("**/conversation/*")
    conversation = page.url.rsplit("/", 1)[1]
    found = serious(page, "signed out, with sign-in")

    sign_in(page, "heidi@example.com")
    assert page.url.endswith(f"/conversation/{conversation}")  # back where the sign-in began
    expect(page.get_by_role("article", name="You").first).to_contain_text("Remember the tulips")
    found += serious(page, "signed in")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "signed-in.png")

    second = visit(login_server.url)
    sign_in(second.page, "heidi@example.com")
    expect(second.page.locator("li.conversation")).to_have_count(1)
    second.page.locator("li.conversation").first.click()
    expect(second.page.get_by_role("article", name="You").first).to_contain_text("Remember the tulips")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_selector("body[data-ready]")
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    expect(page.locator("li.conversation")).to_have_count(0)  # this browser holds nothing of hers now
    second.page.reload()
    second.page.wait_for_selector("body[data-ready]")
    expect(second.page.get_by_text("Signed in as heidi@example.com")).to_be_visible()  # the other stays in
    assert found == [] and ours(first.watcher.errors) == [] and ours(second.watcher.errors) == []


def ours(errors: list[str]) -> list[str]:
    """The console's errors less the provider's own page's: its stylesheet from a CDN (no internet here)
    and its missing favicon (werkzeug's "NOT FOUND"; this server says "Not Found")."""
    return [e for e in errors if "ERR_NAME_NOT_RESOLVED" not in e and "(NOT FOUND)" not in e]
