"""The SQLite schema, as numbered migrations applied in order, each once (names kept in ``_migrations``),
and what applying them needs: the switch to WAL and a write transaction."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from h2ochat.server.storage import SchemaTooNew, now
from h2ochat.server.storage.devices import DEVICES_SCHEMA
from h2ochat.server.storage.people import LOGINS_SCHEMA, PEOPLE_SCHEMA
from h2ochat.server.storage.portability import IMPORTS_SCHEMA
from h2ochat.server.storage.runs import SCHEMA as _RUNS
from h2ochat.server.storage.shares import SHARES_SCHEMA
from h2ochat.server.storage.usage import USAGE_SCHEMA
from h2ochat.server.storage.web_searches import WEB_SEARCHES_SCHEMA

__all__ = ["MIGRATIONS", "migrate", "transaction", "use_wal"]


Preprompts = Mapping[str, str]  # each served model's preprompt, by name
Step = Callable[[sqlite3.Connection, Preprompts], None]


def _statements(script: str) -> Step:
    def migrate(db: sqlite3.Connection, _preprompts: Preprompts) -> None:
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

# Conversations never touched since they were created: the few rows the orphan sweep reads.
_UNTOUCHED = "CREATE INDEX conversations_untouched ON conversations (updated_at) WHERE updated_at = created_at"

# The person's own generation settings for a conversation (temperature, max_new_tokens), as a JSON object.
_SCHEMA_5 = "ALTER TABLE conversations ADD COLUMN settings TEXT NOT NULL DEFAULT '{}'"

# Conversations become trees (protocol/tree.py). Each list becomes a branch: every message the parent of
# the next, under a new system root whose text is the model's preprompt (the system prompt those
# conversations were answered with). Positions move up by one to make room for the root at 0, in two
# steps: SQLite checks UNIQUE (conversation_id, position) row by row, and +1 in place would collide.
TREES = """
ALTER TABLE messages ADD COLUMN parent_id TEXT;
ALTER TABLE messages ADD COLUMN score INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN root_id TEXT NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN active_id TEXT NOT NULL DEFAULT '';
UPDATE messages SET position = -position - 1;
UPDATE messages SET position = -position;
INSERT INTO messages (conversation_id, id, position, role, content, status, created_at, updated_at)
    SELECT id, root_id, 0, 'system', coalesce((SELECT text FROM _preprompts WHERE model = conversations.model), ''),
           'done', created_at, created_at FROM conversations;
UPDATE messages SET parent_id = (SELECT p.id FROM messages AS p WHERE p.conversation_id = messages.conversation_id
                                 AND p.position = messages.position - 1) WHERE position > 0;
UPDATE conversations SET active_id = (SELECT id FROM messages WHERE conversation_id = conversations.id
                                      ORDER BY position DESC LIMIT 1);
CREATE INDEX messages_by_parent ON messages (conversation_id, parent_id);
DROP TABLE _preprompts
"""


def _trees(db: sqlite3.Connection, preprompts: Preprompts) -> None:
    # The ids SQL cannot make: a UUID for each root, like every other message id.
    db.execute("CREATE TEMP TABLE _preprompts (model TEXT PRIMARY KEY, text TEXT NOT NULL)")
    db.executemany("INSERT INTO _preprompts VALUES (?, ?)", list(preprompts.items()))
    script = TREES.split(";")
    for statement in script[:4]:  # the new columns first, to hold the roots' ids
        db.execute(statement)
    ids = [(str(uuid.uuid4()), conversation_id) for (conversation_id,) in db.execute("SELECT id FROM conversations")]
    db.executemany("UPDATE conversations SET root_id = ? WHERE id = ?", ids)
    for statement in script[4:]:
        db.execute(statement)


# The person's "Search the web" choice (searchEnabled), kept per session; off until they choose.
_SEARCH_SETTING = "ALTER TABLE sessions ADD COLUMN search_enabled INTEGER NOT NULL DEFAULT 0"


MIGRATIONS: list[tuple[str, Step]] = [
    ("001_create_tables", _statements(_SCHEMA_1)),
    ("002_issued_sessions_and_rates", _statements(_SCHEMA_2)),
    ("003_answers_left_out", _statements(_SCHEMA_3)),
    ("004_untouched_conversations", _statements(_UNTOUCHED)),
    ("005_conversation_settings", _statements(_SCHEMA_5)),
    ("006_conversation_trees", _trees),
    ("007_runs", _statements(_RUNS)),
    ("008_shares", _statements(SHARES_SCHEMA)),
    ("012_imports", _statements(IMPORTS_SCHEMA)),
    ("013_devices", _statements(DEVICES_SCHEMA)),  # storage/devices.py
    ("014_web_searches", _statements(WEB_SEARCHES_SCHEMA)),
    ("015_search_setting", _statements(_SEARCH_SETTING)),
    ("016_people", _statements(PEOPLE_SCHEMA)),  # storage/people.py
    ("017_usage", _statements(USAGE_SCHEMA)),  # storage/usage.py
    ("018_logins", _statements(LOGINS_SCHEMA)),  # storage/people.py: sign-ins under way
]


def use_wal(db: sqlite3.Connection, tries: int = 50) -> None:
    """Switch a database to WAL, waiting for others doing the same.

    The switch needs the database to itself and SQLite answers "locked" at once,
    without its busy handler, when another connection is switching it too (seen
    when several stores open a new file together): wait and try again.
    """
    for attempt in range(tries):
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.1)


def migrate(db: sqlite3.Connection, preprompts: Preprompts) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    applied = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    known = {name for name, _ in MIGRATIONS}
    if applied - known:
        raise SchemaTooNew(
            f"the database was migrated by a newer h2ochat (migrations {', '.join(sorted(applied - known))} "
            "are unknown to this version); upgrade h2ochat or use another database"
        )
    for name, step in MIGRATIONS:
        if name not in applied:
            with transaction(db):
                # Checked again under the write lock: another process opening the file may have applied it.
                if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                    continue
                step(db, preprompts)
                db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, now()))


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error (the connection is in autocommit mode)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
