"""A local stand-in for the Hugging Face Hub's download API, over loopback (``HF_ENDPOINT`` points at it).

It answers what huggingface_hub 0.2x-0.3x calls (read in its file_download.py and hf_api.py):

- ``GET /api/models/OWNER/NAME/tree/REVISION`` (``list_repo_tree``): the files and their sizes;
- ``HEAD /OWNER/NAME/resolve/REVISION/FILE`` (``get_hf_file_metadata``): ``X-Repo-Commit``,
  ``ETag``/``X-Linked-Etag`` and ``Content-Length``/``X-Linked-Size``;
- ``GET`` of the same path, honouring ``Range: bytes=N-`` (a resumed download) with a 206.

Errors carry ``X-Error-Code`` as the Hub does (RepoNotFound, EntryNotFound, GatedRepo), which is how
huggingface_hub chooses its exception. ``cut_once`` cuts the next body of a file midway, then refuses
further downloads until ``refusing`` is cleared, so that the client stops with a partial file.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

__all__ = ["COMMIT", "TOKEN", "HubStandIn", "RepoFile", "running_hub"]

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_standin_token"  # the one token that opens the gated repositories
_CHUNK = 1 << 20


@dataclass
class RepoFile:
    source: Path | bytes
    claimed_size: int | None = None  # a size the listing claims instead of the real one (disk-space test)

    def read(self) -> bytes:
        return self.source if isinstance(self.source, bytes) else self.source.read_bytes()

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size


@dataclass
class HubStandIn:
    repos: dict[str, dict[str, RepoFile]] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    cut_once: set[str] = field(default_factory=set)  # file names whose next GET body is cut midway
    refusing: bool = False  # set by a cut: GETs fail (403) until the test clears it
    _etags: dict[str, str] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/models/{owner}/{name}/tree/{revision}", self.tree)
        app.router.add_route("*", "/{owner}/{name}/resolve/{revision}/{file:.+}", self.resolve)
        return app

    def gets(self, file: str) -> list[str | None]:
        """The Range header of each GET of ``file`` so far (None: the whole file)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + file)]

    def _repo(self, request: web.Request) -> tuple[str, dict[str, RepoFile]]:
        repo = f"{request.match_info['owner']}/{request.match_info['name']}"
        if repo in self.gated and request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPForbidden(headers={"X-Error-Code": "GatedRepo"}, text=f"Access to {repo} is restricted.")
        if repo not in self.repos:
            raise web.HTTPNotFound(headers={"X-Error-Code": "RepoNotFound"}, text="Repository not found")
        return repo, self.repos[repo]

    async def tree(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, None))
        _, files = self._repo(request)
        listing = [
            {"type": "file", "path": name, "size": f.claimed_size or f.size, "oid": self._etag(name, f)}
            for name, f in files.items()
        ]
        return web.json_response(listing)

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, request.headers.get("Range")))
        _, files = self._repo(request)
        name = request.match_info["file"]
        if name not in files:
            raise web.HTTPNotFound(headers={"X-Error-Code": "EntryNotFound"}, text="Entry not found")
        if self.refusing and request.method == "GET":
            raise web.HTTPForbidden(text="refused after the cut, so that the client stops with a partial file")
        file = files[name]
        etag = self._etag(name, file)
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(file.size)})
        return await self._body(request, name, file, headers)

    async def _body(
        self, request: web.Request, name: str, file: RepoFile, headers: dict[str, str]
    ) -> web.StreamResponse:
        data = file.read()
        start = 0
        if request.http_range.start is not None:
            start = request.http_range.start
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        response = web.StreamResponse(status=206 if start else 200, headers=headers)
        response.content_length = len(data) - start
        await response.prepare(request)
        end = len(data)
        if name in self.cut_once:
            self.cut_once.discard(name)
            end = start + (len(data) - start) // 2
            self.refusing = True
        for offset in range(start, end, _CHUNK):
            await response.write(data[offset : min(offset + _CHUNK, end)])
        if end < len(data):
            assert request.transport is not None
            request.transport.close()  # the connection drops with half the body sent
            return response
        await response.write_eof()
        return response

    def _etag(self, name: str, file: RepoFile) -> str:
        if name not in self._etags:
            self._etags[name] = hashlib.sha256(file.read()).hexdigest()
        return self._etags[name]


def running_hub(hub: HubStandIn) -> Iterator[str]:
    """Serve ``hub`` from its own thread (the clients under test are other processes); yields its URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(hub.app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
