"""Search engines: a SearXNG instance's JSON API, or the ``ddgs`` library; each gives title, address, snippet."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from h2ochat.server.config import WebSearchConfig

__all__ = ["DdgsEngine", "Engine", "EngineError", "Result", "SearxngEngine", "engine_for"]


class EngineError(Exception):
    """The engine gave no results: unreachable, an error status, or an answer of another shape."""


@dataclass(frozen=True)
class Result:
    title: str
    url: str
    snippet: str


class Engine(Protocol):
    name: str

    async def search(self, query: str, count: int) -> list[Result]: ...


class SearxngEngine:
    """``GET <url>/search?q=...&format=json`` (SearXNG's search API; the instance must allow json)."""

    name = "SearXNG"

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    async def search(self, query: str, count: int) -> list[Result]:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session,
                session.get(f"{self.url}/search", params={"q": query, "format": "json"}) as response,
            ):
                if response.status != 200:
                    raise EngineError(f"SearXNG answered HTTP {response.status} (is format=json enabled?)")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:  # asyncio's: 3.10's is not built in
            raise EngineError(f"SearXNG at {self.url} could not be asked ({type(exc).__name__}: {exc})") from None
        return _results(body.get("results") if isinstance(body, dict) else None, "url", "content", count)


class DdgsEngine:
    """The ``ddgs`` library (several public engines, no key); for machines with internet."""

    name = "DDGS"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    async def search(self, query: str, count: int) -> list[Result]:
        from ddgs import DDGS  # only when configured: it is an optional dependency

        def ask() -> Any:
            return DDGS(timeout=int(self.timeout) or 1).text(query, max_results=count)

        try:
            found = await asyncio.wait_for(asyncio.to_thread(ask), self.timeout)
        except Exception as exc:  # the library's own errors: no network, rate limits, no results
            raise EngineError(f"DDGS gave no results ({type(exc).__name__}: {exc})") from None
        return _results(found, "href", "body", count)


def _results(items: Any, url_key: str, snippet_key: str, count: int) -> list[Result]:
    if not isinstance(items, list):
        raise EngineError("the engine's answer has no list of results")
    results = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get(url_key), str):
            results.append(Result(str(item.get("title") or ""), item[url_key], str(item.get(snippet_key) or "")))
    return results[:count]


def engine_for(config: WebSearchConfig) -> Engine | None:
    if config.engine == "searxng":
        return SearxngEngine(config.searxng_url, config.fetch_timeout * 2)
    if config.engine == "ddgs":
        return DdgsEngine(config.fetch_timeout * 2)
    return None
