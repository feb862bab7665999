"""Runs: an answer's generation, with the log of the events it sent, so that any client can reattach.

A run is created when an answer starts (its id is today's chat-ui ``generationId``, or the server's),
and its events are appended in batches, numbered from 1 (``seq``) in the order the answer's own
stream sent them. When it ends, its status is written (``completed``, ``interrupted`` or ``error``)
with the seq of its first closing event (``kept_from``): after ``run_log_keep`` seconds the events
before it are dropped, so a late reader still gets the whole text (the closing events carry it) and
the database keeps only the answer's text, in its message.

A run still marked ``running`` whose answer a stopped server left (marked interrupted, "server
stopped") reads as ``interrupted``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "COMPACT",
    "COMPACTED",
    "END_ABANDONED",
    "RUNNING",
    "RUN_STATUS",
    "SCHEMA",
    "SELECT_RUN",
    "RunListener",
    "RunRow",
    "Runs",
    "run_row",
]

RunListener = Callable[[str, int], None]
"""Called with a run's id and its newest seq when another replica appended events to it."""

# What a run's status reads as. A run still marked running whose answer a stopped server left (marked
# "server stopped" by the next start, or by another replica once its lease ran out), or whose answer is
# gone, is interrupted; an answer already saved whose run's end is not written yet is still running.
RUN_STATUS = (
    "CASE WHEN r.status = 'running' AND (m.id IS NULL OR m.interruption = 'server stopped') "
    "THEN 'interrupted' ELSE r.status END"
)


@dataclass(frozen=True)
class RunRow:
    id: str
    conversation_id: str
    answer_id: str
    generation: str  # "2023" or "current": the shape of its events
    status: str  # running, completed, interrupted, error
    last_seq: int
    kept_from: int | None
    started_at: str


class Runs(Protocol):
    """The part of :class:`~h2ochat.server.storage.Store` that keeps runs and their event logs."""

    async def begin_run(
        self, run_id: str, conversation_id: str, session_id: str, answer_id: str, generation: str, *, limit: int = 0
    ) -> None:
        """Record a run; ``TooManyRunning`` if the session runs ``limit`` (> 0) answers already,
        ``RunIdTaken`` if the id is used. Call it before the exchange is stored: a run whose answer was
        never stored counts for nothing."""
        ...

    async def append_events(self, run_id: str, first_seq: int, events: list[str]) -> None:
        """Append ``events`` (seq ``first_seq`` onwards) in one statement, and tell the other replicas."""
        ...

    async def end_run(self, run_id: str, status: str, kept_from: int) -> None: ...

    async def run(self, conversation_id: str, run_id: str | None = None) -> RunRow | None:
        """The conversation's run ``run_id``, or its newest run; None if there is none."""
        ...

    async def run_events(self, run_id: str, after: int) -> list[tuple[int, str]]:
        """The run's stored events after seq ``after``, in order."""
        ...

    async def running_answers(self, session_id: str) -> list[tuple[str, str, str]]:
        """The session's running runs: (conversation id, run id, answer id), newest first."""
        ...

    def on_run_events(self, listener: RunListener) -> None:
        """Be told when another replica appends events (PostgreSQL); SQLite has one process and no others."""
        ...


# The schema, the same on both databases (migration 007_runs).
SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    answer_id TEXT NOT NULL,
    generation TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'interrupted', 'error')),
    last_seq INTEGER NOT NULL DEFAULT 0,
    kept_from INTEGER,
    compacted INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    ended_at TEXT
);
CREATE INDEX runs_by_conversation ON runs (conversation_id, started_at);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
CREATE INDEX runs_to_compact ON runs (ended_at) WHERE compacted = 0;
CREATE TABLE run_events (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
)
"""

_ANSWER = "LEFT JOIN messages m ON m.conversation_id = r.conversation_id AND m.id = r.answer_id"
# The session's running runs ({session}: its placeholder).
RUNNING = (
    f"FROM runs r JOIN conversations c ON c.id = r.conversation_id {_ANSWER} "
    "WHERE c.session_id = {session} AND r.status = 'running' AND m.status = 'generating'"
)
SELECT_RUN = (
    f"SELECT r.id, r.conversation_id, r.answer_id, r.generation, {RUN_STATUS}, r.last_seq, r.kept_from, "
    f"r.started_at FROM runs r {_ANSWER}"
)
# What upkeep does to the logs, oldest first ({ended}: the cutoff's placeholder, {stamp}: now):
# a run a stopped replica left running is ended (its log dropped whole), then the logs of runs ended
# before the cutoff lose every event before their closing ones.
END_ABANDONED = (
    "UPDATE runs SET status = 'interrupted', ended_at = {stamp} WHERE status = 'running' AND started_at < {ended} "
    "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = runs.conversation_id "
    "AND m.id = runs.answer_id AND m.status = 'generating')"
)
COMPACT = (
    "DELETE FROM run_events WHERE run_id IN (SELECT id FROM runs WHERE compacted = 0 AND ended_at < {ended}) "
    "AND seq < (SELECT coalesce(kept_from, last_seq + 1) FROM runs WHERE runs.id = run_events.run_id)"
)
COMPACTED = "UPDATE runs SET compacted = 1 WHERE compacted = 0 AND ended_at < {ended}"


def run_row(row: tuple[object, ...]) -> RunRow:
    return RunRow(*row)  # type: ignore[arg-type]
