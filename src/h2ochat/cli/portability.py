"""``h2ochat export FILE`` and ``h2ochat import FILE`` (docs/protocol.md section 16).

With ``--url`` (or H2OCHAT_URL) they ask a running server, as the page's "Export all" and "Import"
do; without, they open the server's database themselves (``--db``, ``--config`` or the default file,
found as ``h2ochat serve`` finds it), for when no server runs. Either way a session is named by its
``hf-chat`` cookie's value (``--session``); an import without one starts a session and prints it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from h2ochat.cli.common import CONFIG_OPTION, DB_OPTION, fail, local_store, run
from h2ochat.providers.defaults import configured_url

__all__ = ["export", "import_"]

_SESSION = click.option(
    "--session",
    envvar="H2OCHAT_SESSION",
    help="The session: the value of the browser's hf-chat cookie for that server (env H2OCHAT_SESSION).",
)
_URL = click.option("--url", help="A running h2ochat server (env H2OCHAT_URL); without: its database, here.")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, writable=True))
@_URL
@_SESSION
@CONFIG_OPTION
@DB_OPTION
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def export(
    file: str, url: str | None, session: str | None, config_path: str | None, db: str | None, debug: bool
) -> None:
    """Write every conversation of a session to FILE, a zip (JSON and Markdown).

    \b
      h2ochat export history.zip --url http://127.0.0.1:8080 --session <hf-chat cookie>
      h2ochat export history.zip --session <hf-chat cookie>        # the local database, no server
    """
    if not session:
        fail("Name the session to export with --session (the value of the browser's hf-chat cookie)")
    body = run(lambda: _export(configured_url(url), session, config_path, db), debug)
    Path(file).write_bytes(body)
    click.echo(f"Wrote {file} ({len(body)} bytes)")


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@_URL
@_SESSION
@CONFIG_OPTION
@DB_OPTION
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def import_(
    file: str, url: str | None, session: str | None, config_path: str | None, db: str | None, debug: bool
) -> None:
    """Add FILE's conversations to a session: an h2ochat export (zip or JSON) or ChatGPT's conversations.json.

    Conversations get new ids; those imported before are skipped. Without --session, a new session holds them.
    """
    body = Path(file).read_bytes()
    answer, used = run(lambda: _import(configured_url(url), session, config_path, db, body), debug)
    click.echo(f"Imported {answer['imported']} conversations; {answer['skipped']} were there already.")
    if used and used != session:
        click.echo(f"Session: {used} (set it as the hf-chat cookie, or pass --session, to reach them)")


async def _export(url: str | None, session: str, config_path: str | None, db: str | None) -> bytes:
    if url is not None:
        from h2ochat.providers.portability import COOKIE, export_history
        from h2ochat.providers.session import H2oSession

        async with H2oSession(url, cookies={COOKIE: session}) as client:
            return await export_history(client)
    from h2ochat.server.chatui.portability import export_zip

    store, _ = await local_store(config_path, db)
    try:
        return await export_zip(store, session)
    finally:
        await store.close()


async def _import(
    url: str | None, session: str | None, config_path: str | None, db: str | None, body: bytes
) -> tuple[dict[str, Any], str | None]:
    if url is not None:
        from h2ochat.providers.portability import COOKIE, import_history
        from h2ochat.providers.session import H2oSession

        async with H2oSession(url, cookies={COOKIE: session} if session else {}) as client:
            return await import_history(client, body)
    from h2ochat.protocol.export import ImportRefused
    from h2ochat.server.chatui.portability import import_body

    store, config = await local_store(config_path, db)
    try:
        session = session or await store.new_session()
        imported = await import_body(store, config, session, body, config.model_names[0])
    except ImportRefused as exc:
        fail(f"{exc}")
    finally:
        await store.close()
    answer = {
        "imported": len(imported.conversations),
        "skipped": imported.skipped,
        "conversations": imported.conversations,
    }
    return answer, session
