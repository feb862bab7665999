"""``h2ochat keys``: a person's API keys, made, listed and revoked on the server's database.

A key opens ``/v1``, ``/generate`` and the chat protocol as its person (README "People: sign-in for
teams"). It is printed once, here; the database keeps only its hash.
"""

from __future__ import annotations

from typing import Any

import click

from h2ochat.cli.common import CONFIG_OPTION, DB_OPTION, fail, local_store, run

__all__ = ["keys"]

_USER = click.option("--user", "login", required=True, help="The person: their login, as the proxy names them.")


@click.group()
def keys() -> None:
    """A person's API keys for /v1, /generate and the chat protocol (on the server's database)."""


@keys.command()
@click.argument("name")
@_USER
@CONFIG_OPTION
@DB_OPTION
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def create(name: str, login: str, config_path: str | None, db: str | None, debug: bool) -> None:
    """Make a key named NAME for a person and print it (once: only its hash is kept).

    \b
      h2ochat keys create laptop --user alice@example.com
    """
    from h2ochat.server.storage.people import KEY_NAME_RULE, key_name

    checked = key_name(name)
    if checked is None:
        fail(KEY_NAME_RULE)
    key, listed = run(lambda: _create(config_path, db, _login(login), checked), debug)
    click.echo(key)
    click.echo(f"Key {listed.id} ({listed.name}) for {_login(login)}: shown once, keep it now.", err=True)


@keys.command("list")
@_USER
@CONFIG_OPTION
@DB_OPTION
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def list_(login: str, config_path: str | None, db: str | None, debug: bool) -> None:
    """List a person's keys: id, name, made, last used, revoked."""
    found = run(lambda: _with_store(config_path, db, lambda store: store.api_keys(_login(login))), debug)
    if not found:
        click.echo(f"{_login(login)} has no API keys.")
    for key in found:
        state = f"revoked {key.revoked_at}" if key.revoked_at else "live"
        click.echo(f"{key.id}  {key.name}  made {key.created_at}  last used {key.last_used_at or 'never'}  {state}")


@keys.command()
@click.argument("key_id")
@_USER
@CONFIG_OPTION
@DB_OPTION
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def revoke(key_id: str, login: str, config_path: str | None, db: str | None, debug: bool) -> None:
    """Revoke a person's key KEY_ID (from keys list): refused at once, on every replica."""
    done = run(lambda: _with_store(config_path, db, lambda store: store.revoke_api_key(_login(login), key_id)), debug)
    if not done:
        fail(f"{_login(login)} has no live key {key_id!r}: see h2ochat keys list --user {_login(login)}")
    click.echo(f"Revoked {key_id}.")


def _login(login: str) -> str:
    return login.strip().lower()  # as the server takes the proxy's header


async def _create(config_path: str | None, db: str | None, login: str, name: str) -> tuple[str, Any]:
    from h2ochat.server.storage.devices import digest
    from h2ochat.server.storage.people import new_api_key

    key = new_api_key()
    listed = await _with_store(config_path, db, lambda store: store.create_api_key(login, name, digest(key)))
    return key, listed


async def _with_store(config_path: str | None, db: str | None, step: Any) -> Any:
    store, _ = await local_store(config_path, db)
    try:
        return await step(store)
    finally:
        await store.close()
