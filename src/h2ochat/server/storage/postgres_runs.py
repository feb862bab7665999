"""Runs and their event logs on PostgreSQL (:mod:`.runs`); a mixin of :class:`~.postgres.PostgresStore`.

Each step is one statement. Appending events notifies :data:`~.postgres_notify.RUN_CHANNEL` in the
same statement, so a reader on another replica is told when they are committed, and reads them then.
"""

from __future__ import annotations

import contextlib
from typing import Any

import asyncpg

from h2ochat.server.storage import ConversationGone, RunIdTaken, TooManyRunning
from h2ochat.server.storage.postgres_connections import Connections, rows
from h2ochat.server.storage.postgres_notify import RUN_CHANNEL, StopChannel
from h2ochat.server.storage.postgres_sql import NOW, clock
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

__all__ = ["PostgresRuns"]

# A continued answer's earlier run, left running by a stopped replica, is over; then the new run,
# if the session runs fewer than $6 answers ($6 = 0: no limit). The count reads the rows as they were
# before the statement, when the answer of this run is not generating yet.
_BEGIN = f"""
WITH stale AS (
    UPDATE runs SET status = 'interrupted', ended_at = {NOW}
    WHERE conversation_id = $2 AND answer_id = $3 AND status = 'running' RETURNING 1
)
INSERT INTO runs (id, conversation_id, answer_id, generation, started_at)
SELECT $1, $2, $3, $4, {NOW} WHERE $6 = 0 OR (SELECT count(*) {RUNNING.format(session="$5")}) < $6
"""
_APPEND = f"""
WITH appended AS (
    INSERT INTO run_events (run_id, seq, data)
    SELECT $1, $2 + position - 1, data FROM unnest($3::text[]) WITH ORDINALITY AS events (data, position)
    WHERE EXISTS (SELECT 1 FROM runs WHERE id = $1)
    RETURNING 1
)
SELECT pg_notify('{RUN_CHANNEL}', $1 || ' ' || ($2 + cardinality($3::text[]) - 1)) WHERE EXISTS (SELECT 1 FROM appended)
"""
# Readers on other replicas are told, as of new events.
_END = f"""
WITH ended AS (
    UPDATE runs SET status = $2, kept_from = $3, ended_at = {NOW},
        last_seq = (SELECT coalesce(max(seq), 0) FROM run_events WHERE run_id = $1)
    WHERE id = $1 RETURNING last_seq
)
SELECT pg_notify('{RUN_CHANNEL}', $1 || ' ' || last_seq) FROM ended
"""


class PostgresRuns:
    options: Any
    _db: Connections
    _stops: StopChannel

    async def begin_run(
        self, run_id: str, conversation_id: str, session_id: str, answer_id: str, generation: str, *, limit: int = 0
    ) -> None:
        try:
            began = await self._db.execute(_BEGIN, run_id, conversation_id, answer_id, generation, session_id, limit)
        except asyncpg.UniqueViolationError:
            raise RunIdTaken(f"generationId {run_id} was used for another answer; send a new one") from None
        except asyncpg.ForeignKeyViolationError:
            raise ConversationGone("The conversation was deleted meanwhile") from None
        if not began:
            raise TooManyRunning(limit)

    async def append_events(self, run_id: str, first_seq: int, events: list[str]) -> None:
        with contextlib.suppress(asyncpg.ForeignKeyViolationError):  # the conversation was deleted meanwhile
            await self._db.execute(_APPEND, run_id, first_seq, events)

    async def end_run(self, run_id: str, status: str, kept_from: int) -> None:
        await self._db.execute(_END, run_id, status, kept_from)

    async def run(self, conversation_id: str, run_id: str | None = None) -> RunRow | None:
        if run_id is None:
            sql = f"{SELECT_RUN} WHERE r.conversation_id = $1 ORDER BY r.started_at DESC LIMIT 1"
            row = await self._db.one(sql, conversation_id)
        else:
            row = await self._db.one(
                f"{SELECT_RUN} WHERE r.conversation_id = $1 AND r.id = $2", conversation_id, run_id
            )
        return None if row is None else run_row(tuple(row))

    async def run_events(self, run_id: str, after: int) -> list[tuple[int, str]]:
        sql = "SELECT seq, data FROM run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq"
        return [(row[0], row[1]) for row in await self._db.all(sql, run_id, after)]

    async def running_answers(self, session_id: str) -> list[tuple[str, str, str]]:
        sql = f"SELECT r.conversation_id, r.id, r.answer_id {RUNNING.format(session='$1')} ORDER BY r.started_at DESC"
        return [(row[0], row[1], row[2]) for row in await self._db.all(sql, session_id)]

    def on_run_events(self, listener: RunListener) -> None:
        self._stops.add_run_listener(listener)

    async def _compact_runs(self, db: Any) -> int:
        """Upkeep's part, on its connection; the number of runs whose logs were compacted."""
        async with db.transaction():
            await db.execute(END_ABANDONED.format(stamp=NOW, ended=clock("$1")), 60.0)
            await db.execute(COMPACT.format(ended=clock("$1")), self.options.run_log_keep)
            return rows(await db.execute(COMPACTED.format(ended=clock("$1")), self.options.run_log_keep))
