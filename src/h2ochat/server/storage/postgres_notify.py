"""Stop requests and new run events between replicas: PostgreSQL ``NOTIFY``, ``LISTEN`` on a connection
of our own.

Stops go on :data:`CHANNEL`; a run's appended events on :data:`RUN_CHANNEL` as ``"<run id> <newest
seq>"`` (sent by the statement that appends them, so delivered when they are committed).

A replica that asks for a stop delivers it to itself at once, then notifies
the others; each replica ignores its own notifications. The listening
connection is reopened whenever it is lost (a restarted database), so the
channel heals by itself; a stop sent while it is away is not replayed (the
stream it targets ends anyway with its time limits).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg

from h2ochat.server.storage import StopListener
from h2ochat.server.storage.runs import RunListener

__all__ = ["CHANNEL", "RUN_CHANNEL", "StopChannel"]

log = logging.getLogger("h2ochat.server")

CHANNEL = "h2ochat_stop"
RUN_CHANNEL = "h2ochat_runs"


class StopChannel:
    def __init__(self, dsn: str, replica: str, unavailable: tuple[type[BaseException], ...]) -> None:
        self._dsn = dsn
        self._replica = replica
        self._unavailable = unavailable
        self._listeners: list[StopListener] = []
        self._run_listeners: list[RunListener] = []
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()  # set while listening (tests wait for it)

    def add(self, listener: StopListener) -> None:
        self._listeners.append(listener)

    def add_run_listener(self, listener: RunListener) -> None:
        self._run_listeners.append(listener)

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def notify(self, db: Any, conversation_id: str, reason: str) -> None:
        """Tell the other replicas, through ``db`` (a connection)."""
        await db.execute("SELECT pg_notify($1, $2)", CHANNEL, self.payload(conversation_id, reason))

    def payload(self, conversation_id: str, reason: str) -> str:
        """What the other replicas are sent to stop the conversation's generations."""
        return json.dumps({"conversation": conversation_id, "reason": reason, "from": self._replica})

    def deliver(self, conversation_id: str, reason: str) -> None:
        """Stop the conversation's generations on this replica."""
        for listener in self._listeners:
            listener(conversation_id, reason)

    def _on_notification(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            if message["from"] != self._replica:
                self.deliver(str(message["conversation"]), str(message["reason"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed stop notification: %r", payload[:200])

    def _on_run_events(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        run_id, _, seq = payload.partition(" ")
        if not seq.isdigit():
            log.warning("ignored a malformed run notification: %r", payload[:200])
            return
        for listener in self._run_listeners:
            listener(run_id, int(seq))

    async def _listen(self) -> None:
        while True:
            try:
                db = await asyncpg.connect(self._dsn, timeout=5.0)
            except self._unavailable:
                await asyncio.sleep(1.0)
                continue
            try:
                await self._hold(db)
            finally:
                self.connected.clear()
                db.terminate()
            log.warning("the stop-request listener lost the database; reconnecting")
            await asyncio.sleep(0.5)

    async def _hold(self, db: Any) -> None:
        """Listen on ``db`` until the connection is lost."""
        lost = asyncio.Event()
        db.add_termination_listener(lambda _db: lost.set())
        try:
            await db.add_listener(CHANNEL, self._on_notification)
            await db.add_listener(RUN_CHANNEL, self._on_run_events)
        except self._unavailable:
            return
        self.connected.set()
        await lost.wait()
