"""The proxy in front of a chat-ui deployment, for peers that hard-code HuggingChat's public name.

hugchat writes ``Host: huggingface.co`` on most requests and ``Origin: https://huggingface.co`` on
every message post, whatever address it is pointed at. HuggingChat itself is chat-ui under ``/chat``
behind a TLS proxy that answers as ``https://huggingface.co`` (its ``PUBLIC_ORIGIN``). This plays that
proxy on loopback: it forwards each request unchanged to the server and tells it, in the headers the
server trusts from its configured proxies, that the client used ``https://huggingface.co``. Bodies are
streamed both ways as they come, so every streamed token reaches the peer when the server writes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

__all__ = ["PUBLIC_HOST", "front"]

PUBLIC_HOST = "huggingface.co"
# Not forwarded: they describe one hop, or aiohttp sets them itself for the next one.
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length"}
)


@asynccontextmanager
async def front(upstream: str) -> AsyncIterator[str]:
    """Serve a proxy to ``upstream`` (scheme://host:port, no path) and yield its own origin."""
    async with aiohttp.ClientSession(auto_decompress=False) as http:

        async def forward(request: web.Request) -> web.StreamResponse:
            headers = {name: value for name, value in request.headers.items() if name.lower() not in _HOP}
            headers["X-Forwarded-Proto"] = "https"
            headers["X-Forwarded-Host"] = PUBLIC_HOST
            body = await request.read()
            url = upstream + request.raw_path
            async with http.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            ) as answer:
                response = web.StreamResponse(status=answer.status, reason=answer.reason)
                for name, value in answer.headers.items():
                    if name.lower() not in _HOP:
                        response.headers.add(name, value)
                await response.prepare(request)
                async for chunk in answer.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()
