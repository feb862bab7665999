"""The session cookie's attributes, over plain HTTP and over TLS (a generated certificate).

``start_server`` takes no SSL context, so the HTTPS server here is built from
``create_app`` with aiohttp's ``TCPSite(ssl_context=...)``.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from h2ochat.server import ServerConfig, create_app, start_server
from reliability.process import server_config
from reliability.tls import make_certificate

__all__ = ["attributes", "cookie_attributes", "https_site", "session_cookie"]


@contextlib.asynccontextmanager
async def https_site(config: ServerConfig, directory: Path) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    """The server behind TLS: (its https:// URL, a client context that trusts its certificate)."""
    certificate = make_certificate(directory)
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=certificate.server_context())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"https://127.0.0.1:{port}", certificate.client_context()
    finally:
        await runner.cleanup()


def session_cookie(response: aiohttp.ClientResponse) -> str:
    """The one ``hf-chat`` Set-Cookie header of a response."""
    cookies = [value for value in response.headers.getall("Set-Cookie", []) if value.startswith("hf-chat=")]
    assert len(cookies) == 1, cookies
    return cookies[0]


def attributes(cookie: str) -> set[str]:
    """A Set-Cookie header's attribute names, lower-case (``httponly``, ``samesite``, ...)."""
    return {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}


_SETTINGS = {"ethicsModalAccepted": True}  # a write: a read issues no session, so no cookie


async def cookie_attributes(directory: Path) -> dict[str, str]:
    """The Set-Cookie header the server sends over HTTP and over HTTPS (to a first settings step)."""
    found = {}
    async with (
        start_server(server_config()) as server,
        aiohttp.ClientSession() as http,
        http.post(f"{server.url}/settings", json=_SETTINGS) as response,
    ):
        found["http"] = session_cookie(response)
    async with https_site(server_config(), directory) as (url, client_tls):
        connector = aiohttp.TCPConnector(ssl=client_tls)
        async with (
            aiohttp.ClientSession(connector=connector) as http,
            http.post(f"{url}/settings", json=_SETTINGS) as response,
        ):
            found["https"] = session_cookie(response)
    return found
