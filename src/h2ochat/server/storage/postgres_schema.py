"""The PostgreSQL schema, as numbered migrations applied in order, each once.

The tables are SQLite's (:mod:`.sqlite`), plus what several replicas need:
``replicas`` (one lease per running server) and ``messages.replica`` (who
generates an answer). Times are stored as SQLite stores them, ISO 8601 text
in UTC, so both stores return the same rows.
"""

from __future__ import annotations

from h2ochat.server.storage.devices import DEVICES_SCHEMA
from h2ochat.server.storage.people import LOGINS_SCHEMA, PEOPLE_SCHEMA
from h2ochat.server.storage.portability import IMPORTS_SCHEMA
from h2ochat.server.storage.postgres_sessions import FEWER_ROUND_TRIPS
from h2ochat.server.storage.postgres_sql import NOW
from h2ochat.server.storage.runs import SCHEMA as _RUNS
from h2ochat.server.storage.shares import SHARES_SCHEMA
from h2ochat.server.storage.usage import USAGE_SCHEMA
from h2ochat.server.storage.web_searches import WEB_SEARCHES_SCHEMA

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

# What must hold together, as functions, so that each step is one round trip (issue 20): a statement
# needs no BEGIN and COMMIT of its own. Functions, not one statement: under READ COMMITTED a statement
# reads the rows of the snapshot it took before waiting on a lock, so a count in the statement that
# takes the lock would miss what the lock's holder just committed; each statement of a (volatile)
# PL/pgSQL function takes a fresh snapshot, so the counts below, made once the lock is held, see it.
# A change to one of them is a new migration (CREATE OR REPLACE FUNCTION).
_ONE_ROUND_TRIP = f"""
CREATE FUNCTION h2ochat_admit(_bucket TEXT, _per_minute INTEGER) RETURNS DOUBLE PRECISION
LANGUAGE plpgsql AS $$
DECLARE
    moment DOUBLE PRECISION;
    used BIGINT;
    oldest DOUBLE PRECISION;
BEGIN
    -- One bucket is counted by one replica at a time; other buckets go on in parallel. The moment is the
    -- database's, read with the lock held: no later entry can be older.
    PERFORM pg_advisory_xact_lock(hashtextextended(_bucket, 0));
    moment := extract(epoch FROM clock_timestamp());
    DELETE FROM rate_events WHERE bucket = _bucket AND at <= moment - 60;
    SELECT count(*), min(at) INTO used, oldest FROM rate_events WHERE bucket = _bucket;
    IF used >= _per_minute THEN
        RETURN least(60.0, greatest(0.001, oldest + 60 - moment));
    END IF;
    INSERT INTO rate_events (bucket, at) VALUES (_bucket, moment);
    RETURN 0.0;
END $$;

CREATE FUNCTION h2ochat_create_conversation(_id TEXT, _session TEXT, _model TEXT, _root TEXT, _preprompt TEXT,
                                            _limit INTEGER) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    stamp TEXT := {NOW};
BEGIN
    IF _limit > 0 THEN
        -- The session's row is the lock: replicas creating for one session count in turn.
        PERFORM 1 FROM sessions WHERE id = _session FOR UPDATE;
        IF (SELECT count(*) FROM conversations WHERE session_id = _session) >= _limit THEN
            RETURN false;
        END IF;
    END IF;
    INSERT INTO conversations (id, session_id, model, created_at, updated_at, root_id, active_id)
        VALUES (_id, _session, _model, stamp, stamp, _root, _root);
    INSERT INTO messages (conversation_id, id, position, role, content, created_at, updated_at)
        VALUES (_id, _root, 0, 'system', _preprompt, stamp, stamp);
    RETURN true;
END $$;

-- 'ok'; 'gone' when the conversation or the parent was deleted meanwhile; 'full' past _limit messages.
CREATE FUNCTION h2ochat_begin_exchange(_conversation TEXT, _parent TEXT, _user TEXT, _inputs TEXT, _answer TEXT,
                                       _replica TEXT, _left_out INTEGER, _limit INTEGER) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    stamp TEXT := {NOW};
    taken BIGINT;
    next_position INTEGER;
BEGIN
    -- The conversation's row is the lock: exchanges of one conversation take positions in turn.
    PERFORM 1 FROM conversations WHERE id = _conversation FOR UPDATE;
    IF NOT FOUND OR NOT EXISTS (SELECT 1 FROM messages WHERE conversation_id = _conversation AND id = _parent) THEN
        RETURN 'gone';
    END IF;
    SELECT count(*), coalesce(max(position) + 1, 0) INTO taken, next_position
        FROM messages WHERE conversation_id = _conversation;
    IF _limit > 0 AND taken + (CASE WHEN _user IS NULL THEN 1 ELSE 2 END) > _limit THEN
        RETURN 'full';
    END IF;
    IF _user IS NOT NULL THEN
        INSERT INTO messages (conversation_id, id, parent_id, position, role, content, status, created_at, updated_at)
            VALUES (_conversation, _user, _parent, next_position, 'user', _inputs, 'done', stamp, stamp);
        _parent := _user;
        next_position := next_position + 1;
    END IF;
    INSERT INTO messages (conversation_id, id, parent_id, position, role, content, status, replica, left_out,
                          created_at, updated_at)
        VALUES (_conversation, _answer, _parent, next_position, 'assistant', '', 'generating', _replica, _left_out,
                stamp, stamp);
    UPDATE conversations SET updated_at = stamp, active_id = _answer WHERE id = _conversation;
    RETURN 'ok';
END $$;
"""

# The person's "Search the web" choice (searchEnabled), kept per session; off until they choose.
_SEARCH_SETTING = "ALTER TABLE sessions ADD COLUMN search_enabled BOOLEAN NOT NULL DEFAULT false"

MIGRATIONS: list[tuple[str, str]] = [
    ("001_create_tables", _SCHEMA_1),
    ("002_answers_left_out", _SCHEMA_2),
    ("003_untouched_conversations", _UNTOUCHED),
    ("004_conversation_settings", _SCHEMA_4),
    ("005_conversation_trees", _TREES),
    ("006_one_round_trip", _ONE_ROUND_TRIP),
    ("007_runs", _RUNS),
    ("008_shares", SHARES_SCHEMA),
    ("011_fewer_round_trips", FEWER_ROUND_TRIPS),  # postgres_sessions: the session checked in each step
    ("012_imports", IMPORTS_SCHEMA),  # portability: what was imported, so a second import skips it
    ("013_devices", DEVICES_SCHEMA),  # storage/devices.py
    ("014_web_searches", WEB_SEARCHES_SCHEMA),
    ("015_search_setting", _SEARCH_SETTING),
    ("016_people", PEOPLE_SCHEMA),  # storage/people.py: people named by a trusted proxy
    ("017_usage", USAGE_SCHEMA),  # storage/usage.py: messages and tokens per session and day
    ("018_logins", LOGINS_SCHEMA),  # storage/people.py: sign-ins under way
]
