"""A minimal chat-ui that replays pre-encoded TGI events as fast as the socket takes them.

Run as ``python -m bench.replay``: it serves the four steps of docs/protocol.md
section 1 on a free loopback port and prints ``{"url": ...}`` once ready.
The answer to a message is ``max_new_tokens`` events from
:func:`bench.corpus.make_stream` (the same stream in every process), encoded
once and then written in 64 KiB pieces: the server's cost per token is
close to nothing, so the client is what gets measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import uuid

from aiohttp import web

from bench.common import announce
from bench.corpus import make_stream

__all__ = ["create_app", "main"]

_WRITE = 64 * 1024


@functools.lru_cache(maxsize=8)
def _answer(tokens: int) -> bytes:
    return make_stream(tokens).body


def _json(request: web.Request, payload: object) -> web.Response:
    response = web.json_response(payload)
    if "hf-chat" not in request.cookies:
        response.set_cookie("hf-chat", str(uuid.uuid4()), path="/", httponly=True, samesite="Lax")
    return response


async def settings(request: web.Request) -> web.StreamResponse:
    await request.post()
    return _json(request, {"type": "redirect", "status": 303, "location": request.headers.get("Referer", "/")})


async def create_conversation(request: web.Request) -> web.StreamResponse:
    await request.json()
    return _json(request, {"conversationId": uuid.uuid4().hex[:24]})


async def message(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    tokens = int(body.get("parameters", {}).get("max_new_tokens") or 16)
    answer = _answer(tokens)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for start in range(0, len(answer), _WRITE):
        await response.write(answer[start : start + _WRITE])
    await response.write_eof()
    return response


async def delete(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


def create_app() -> web.Application:
    app = web.Application()
    app.add_routes(
        [
            web.post("/settings", settings),
            web.post("/conversation", create_conversation),
            web.post("/conversation/{id}", message),
            web.delete("/conversation/{id}", delete),
        ]
    )
    return app


async def _serve(port: int) -> None:
    runner = web.AppRunner(create_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    announce(url=f"http://127.0.0.1:{bound}")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
