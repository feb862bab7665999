"""The PostgreSQL schema, as numbered migrations applied in order, each once.

The tables are SQLite's (:mod:`.sqlite`), plus what several replicas need:
``replicas`` (one lease per running server) and ``messages.replica`` (who
generates an answer). Times are stored as SQLite stores them, ISO 8601 text
in UTC, so both stores return the same rows.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS"]

_SCHEMA_1 = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    active_model TEXT,
    share_conversations BOOLEAN NOT NULL DEFAULT false,
    ethics_accepted_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE INDEX sessions_by_use ON sessions (seen_at);
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
    replica TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, id),
    UNIQUE (conversation_id, position)
);
CREATE INDEX messages_generating ON messages (replica) WHERE status = 'generating';
CREATE TABLE replicas (
    id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE TABLE rate_events (bucket TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
CREATE INDEX rate_events_by_bucket ON rate_events (bucket, at);
CREATE INDEX rate_events_by_age ON rate_events (at);
"""

# The server fits a long chat into the model's context by leaving out its earliest messages;
# each answer records how many, so that the page can say so.
_SCHEMA_2 = "ALTER TABLE messages ADD COLUMN left_out INTEGER NOT NULL DEFAULT 0;"
# Conversations never touched since they were created: the few rows the orphan sweep reads.
_UNTOUCHED = "CREATE INDEX conversations_untouched ON conversations (updated_at) WHERE updated_at = created_at"

# The person's own generation settings for a conversation (temperature, max_new_tokens), as JSON text:
# text, as on SQLite, so that both stores read the same.
_SCHEMA_4 = "ALTER TABLE conversations ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';"

# Conversations become trees (protocol/tree.py), as on SQLite: each list a branch, every message the parent
# of the next, under a new system root holding the model's preprompt (read from the migration's setting
# h2ochat.preprompts). Positions move up by one in two steps: a non-deferrable UNIQUE is checked row by row.
_TREES = """
ALTER TABLE messages ADD COLUMN parent_id TEXT;
ALTER TABLE messages ADD COLUMN score INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN root_id TEXT NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN active_id TEXT NOT NULL DEFAULT '';
UPDATE messages SET position = -position - 1;
UPDATE messages SET position = -position;
UPDATE conversations SET root_id = gen_random_uuid()::text;
INSERT INTO messages (conversation_id, id, position, role, content, status, created_at, updated_at)
    SELECT id, root_id, 0, 'system',
           coalesce(current_setting('h2ochat.preprompts', true)::jsonb ->> model, ''), 'done', created_at, created_at
    FROM conversations;
UPDATE messages AS m SET parent_id = p.id FROM messages AS p
    WHERE p.conversation_id = m.conversation_id AND p.position = m.position - 1 AND m.position > 0;
UPDATE conversations SET active_id = (SELECT id FROM messages WHERE conversation_id = conversations.id
                                      ORDER BY position DESC LIMIT 1);
CREATE INDEX messages_by_parent ON messages (conversation_id, parent_id);
"""

MIGRATIONS: list[tuple[str, str]] = [
    ("001_create_tables", _SCHEMA_1),
    ("002_answers_left_out", _SCHEMA_2),
    ("003_untouched_conversations", _UNTOUCHED),
    ("004_conversation_settings", _SCHEMA_4),
    ("005_conversation_trees", _TREES),
]
