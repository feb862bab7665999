"""Dead share links must not tell why they are dead: revoked, expired and unknown ids, by answer and by time.

``python -m reliability.shares [--rounds N]``: a server on a throwaway SQLite file, one link revoked,
one expired (its expiry moved into the past in the database), and ids never issued; the three are
asked in turn, ``rounds`` times each, on the page (``/r/<id>``) and on the API
(``/api/v2/conversations/<id>``). Every answer must be the same 404 with the same body, and the median
times must lie within noise of each other (``TOLERANCE``): the lookup is one indexed statement
whatever made the link dead. A rough check on a shared machine, which is why it is no unit test;
tests/test_share.py runs it briefly for the bodies only.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from h2ochat.server import start_server
from h2ochat.server.edge.http import CONFIG
from reliability.process import MODEL, server_config

__all__ = ["TOLERANCE", "DeadLinks", "dead_links"]

# Medians this close count as the same: a fraction of the slowest, or an absolute floor (a loopback
# request takes about a millisecond here, and the machine is shared).
TOLERANCE = (0.25, 0.0005)
KINDS = ("revoked", "expired", "unknown")
PATHS = ("/r/{}", "/api/v2/conversations/{}")


@dataclass
class DeadLinks:
    rounds: int
    medians: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> kind -> seconds
    statuses: set[int] = field(default_factory=set)
    bodies: dict[str, int] = field(default_factory=dict)  # path -> distinct bodies seen

    @property
    def alike(self) -> bool:
        return self.statuses == {404} and all(count == 1 for count in self.bodies.values())

    def within_noise(self) -> bool:
        fraction, floor = TOLERANCE
        for times in self.medians.values():
            low, high = min(times.values()), max(times.values())
            if high - low > max(floor, fraction * high):
                return False
        return True


async def dead_links(rounds: int = 200) -> DeadLinks:
    with tempfile.TemporaryDirectory() as directory:
        db = str(Path(directory) / "shares.db")
        async with start_server(server_config(db=db, text="A shared answer.")) as server:
            jar = aiohttp.CookieJar(unsafe=True)  # cookies of an IP address
            async with aiohttp.ClientSession(headers={"Referer": server.url + "/"}, cookie_jar=jar) as owner:
                ids = await _dead_ids(owner, server.url, server.app[CONFIG].db_path())
            async with aiohttp.ClientSession() as reader:
                return await _ask(reader, server.url, ids, rounds)


async def _dead_ids(owner: aiohttp.ClientSession, url: str, db: str) -> dict[str, str]:
    await owner.post(url + "/settings", data={"ethicsModalAccepted": "true", "activeModel": MODEL})
    async with owner.post(url + "/conversation", json={"model": MODEL}) as response:
        conversation = (await response.json())["conversationId"]
    body = {
        "inputs": "Hello",
        "parameters": {},
        "stream": True,
        "options": {"id": str(uuid.uuid4()), "response_id": str(uuid.uuid4())},
    }
    async with owner.post(f"{url}/conversation/{conversation}", json=body) as response:
        await response.read()
    shared = {}
    for kind, days in (("revoked", None), ("expired", 1)):
        async with owner.post(f"{url}/conversation/{conversation}/share", json={"expires_in_days": days}) as response:
            shared[kind] = (await response.json())["shareId"]
    async with owner.delete(f"{url}/api/shares/{shared['revoked']}") as response:
        assert response.status == 200
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute(
            "UPDATE shares SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = ?", (shared["expired"],)
        )
    return {**shared, "unknown": secrets.token_urlsafe(16)}


async def _ask(reader: aiohttp.ClientSession, url: str, ids: dict[str, str], rounds: int) -> DeadLinks:
    result = DeadLinks(rounds)
    for path in PATHS:
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        bodies: set[bytes] = set()
        for _ in range(rounds):
            for kind in KINDS:  # in turn, so that a slow moment of the machine falls on all three
                started = time.perf_counter()
                async with reader.get(url + path.format(ids[kind])) as response:
                    bodies.add(await response.read())
                    result.statuses.add(response.status)
                times[kind].append(time.perf_counter() - started)
        result.medians[path] = {kind: statistics.median(values) for kind, values in times.items()}
        result.bodies[path] = len(bodies)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.shares", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="requests per kind and path (200)")
    args = parser.parse_args(argv)
    result = asyncio.run(dead_links(args.rounds))
    for path, medians in result.medians.items():
        shown = ", ".join(f"{kind} {seconds * 1000:.2f} ms" for kind, seconds in medians.items())
        print(f"{path}: median {shown}; distinct bodies {result.bodies[path]}")
    print(f"statuses {sorted(result.statuses)}; alike: {result.alike}; within noise: {result.within_noise()}")
    return 0 if result.alike and result.within_noise() else 1


if __name__ == "__main__":
    sys.exit(main())
