"""Runs and their event logs on SQLite (:mod:`.runs`); a mixin of :class:`~.sqlite.SQLiteStore`.

One process: readers of a run being generated follow it in memory, so nobody needs to be told of
appended events (``on_run_events`` keeps no listener).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from h2ochat.server.storage import ConversationGone, RunIdTaken, TooManyRunning, now
from h2ochat.server.storage.runs import (
    COMPACT,
    COMPACTED,
    END_ABANDONED,
    RUNNING,
    SELECT_RUN,
    RunListener,
    RunRow,
    run_row,
)
from h2ochat.server.storage.sqlite_schema import transaction

__all__ = ["SQLiteRuns"]

T = TypeVar("T")
_COUNT_RUNNING = f"SELECT count(*) {RUNNING.format(session='?')}"
_APPEND = (
    "INSERT INTO run_events (run_id, seq, data) SELECT ?, ? + key, value FROM json_each(?) "
    "WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?)"
)
_INSERT_RUN = "INSERT INTO runs (id, conversation_id, answer_id, generation, started_at) VALUES (?, ?, ?, ?, ?)"


class SQLiteRuns:
    options: Any

    async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        raise NotImplementedError  # SQLiteStore's

    async def begin_run(
        self, run_id: str, conversation_id: str, session_id: str, answer_id: str, generation: str, *, limit: int = 0
    ) -> None:
        stamp = now()

        def begin(db: sqlite3.Connection) -> None:
            with transaction(db):
                # A continued answer's earlier run, left running by a stopped server, is over.
                db.execute(
                    "UPDATE runs SET status = 'interrupted', ended_at = ? "
                    "WHERE conversation_id = ? AND answer_id = ? AND status = 'running'",
                    (stamp, conversation_id, answer_id),
                )
                (running,) = db.execute(_COUNT_RUNNING, (session_id,)).fetchone()
                if limit and running >= limit:
                    raise TooManyRunning(limit)
                try:
                    db.execute(_INSERT_RUN, (run_id, conversation_id, answer_id, generation, stamp))
                except sqlite3.IntegrityError as exc:
                    if "FOREIGN KEY" in str(exc):
                        raise ConversationGone("The conversation was deleted meanwhile") from None
                    raise RunIdTaken(f"generationId {run_id} was used for another answer; send a new one") from None

        await self._call(begin)

    async def append_events(self, run_id: str, first_seq: int, events: list[str]) -> None:
        # One statement for the batch (a JSON array unpacked by SQLite), none if the run was deleted meanwhile.
        await self._call(lambda db: db.execute(_APPEND, (run_id, first_seq, json.dumps(events), run_id)))

    async def end_run(self, run_id: str, status: str, kept_from: int) -> None:
        def end(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE runs SET status = ?, kept_from = ?, last_seq = (SELECT coalesce(max(seq), 0) FROM run_events "
                "WHERE run_id = ?), ended_at = ? WHERE id = ?",
                (status, kept_from, run_id, now(), run_id),
            )

        await self._call(end)

    async def run(self, conversation_id: str, run_id: str | None = None) -> RunRow | None:
        if run_id is None:
            sql = f"{SELECT_RUN} WHERE r.conversation_id = ? ORDER BY r.started_at DESC, r.rowid DESC LIMIT 1"
            parameters: tuple[str, ...] = (conversation_id,)
        else:
            sql, parameters = f"{SELECT_RUN} WHERE r.conversation_id = ? AND r.id = ?", (conversation_id, run_id)
        row = await self._call(lambda db: db.execute(sql, parameters).fetchone())
        return None if row is None else run_row(row)

    async def run_events(self, run_id: str, after: int) -> list[tuple[int, str]]:
        sql = "SELECT seq, data FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq"
        return await self._call(lambda db: db.execute(sql, (run_id, after)).fetchall())

    async def running_answers(self, session_id: str) -> list[tuple[str, str, str]]:
        sql = f"SELECT r.conversation_id, r.id, r.answer_id {RUNNING.format(session='?')} ORDER BY r.started_at DESC"
        return await self._call(lambda db: db.execute(sql, (session_id,)).fetchall())

    def on_run_events(self, listener: RunListener) -> None:
        pass

    def _compact_runs(self, db: sqlite3.Connection) -> None:
        """Upkeep's part (inside its transaction)."""
        stamp, ended = now(), now(self.options.run_log_keep)
        db.execute(END_ABANDONED.format(stamp="?", ended="?"), (stamp, now(60)))
        db.execute(COMPACT.format(ended="?"), (ended,))
        db.execute(COMPACTED.format(ended="?"), (ended,))
