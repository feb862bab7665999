"""The SQLite schema, as numbered migrations applied in order, each once (names kept in ``_migrations``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

__all__ = ["MIGRATIONS"]


def _statements(script: str) -> Callable[[sqlite3.Connection], None]:
    def migrate(db: sqlite3.Connection) -> None:
        # One statement at a time: executescript() would commit the migration's transaction.
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)

    return migrate


_SCHEMA_1 = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    active_model TEXT,
    share_conversations INTEGER NOT NULL DEFAULT 0,
    ethics_accepted_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    model TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT 'New Chat',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX conversations_by_session ON conversations (session_id, updated_at);
CREATE TABLE messages (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    position INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'done' CHECK (status IN ('generating', 'done', 'interrupted')),
    finish_reason TEXT,
    interruption TEXT,
    generated_tokens INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, id),
    UNIQUE (conversation_id, position)
)
"""

# Sessions issued by the server expire when idle; conversations whose session was never
# stored (before sessions were issued) get one, so that they expire like the others.
_SCHEMA_2 = """
ALTER TABLE sessions ADD COLUMN seen_at TEXT NOT NULL DEFAULT '';
UPDATE sessions SET seen_at = updated_at;
INSERT INTO sessions (id, created_at, updated_at, seen_at)
    SELECT session_id, min(created_at), max(updated_at), max(updated_at) FROM conversations
    WHERE session_id NOT IN (SELECT id FROM sessions) GROUP BY session_id;
CREATE INDEX sessions_by_use ON sessions (seen_at);
CREATE TABLE rate_events (bucket TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX rate_events_by_bucket ON rate_events (bucket, at);
CREATE INDEX rate_events_by_age ON rate_events (at)
"""

# The server fits a long chat into the model's context by leaving out its earliest messages;
# each answer records how many, so that the page can say so.
_SCHEMA_3 = "ALTER TABLE messages ADD COLUMN left_out INTEGER NOT NULL DEFAULT 0"

MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_create_tables", _statements(_SCHEMA_1)),
    ("002_issued_sessions_and_rates", _statements(_SCHEMA_2)),
    ("003_answers_left_out", _statements(_SCHEMA_3)),
]
