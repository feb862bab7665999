"""The session's check, folded into the statement of each step a request begins with (issue 20).

The server used to look the session up before every request, a round trip of its own; the steps that
begin a request (create a conversation, read one with its messages, delete one) now check that the
session is live, and record its use, in their own statement. Migration ``011_fewer_round_trips``
gives the creation's function the same check.
"""

from __future__ import annotations

from h2ochat.server.storage.postgres_sql import NOW, clock

__all__ = ["FEWER_ROUND_TRIPS", "live_session"]


def live_session(session: str, idle: str, touch: str, *, accepted: bool = False) -> str:
    """Two CTEs for ``WITH``: ``live``, the session ``session`` names (a placeholder) if it was used in the
    last ``idle`` seconds (with ``accepted``: and it accepted the welcome gate), with ``stale`` true when
    its last use is older than ``touch`` seconds; ``touched``, which then records this use. A read
    mostly stays a read: the use is written at most once every ``touch`` seconds."""
    gate = " AND ethics_accepted_at IS NOT NULL" if accepted else ""
    return (
        f"live AS (SELECT id, seen_at < {clock(touch)} AS stale FROM sessions "
        f"WHERE id = {session} AND seen_at >= {clock(idle)}{gate}), "
        f"touched AS (UPDATE sessions SET seen_at = {NOW} WHERE id = {session} AND (SELECT stale FROM live))"
    )


# The creation checks the session too, and answers the time it stored, so that the create answer is built
# without reading the conversation back: 'ok' with ``created``, 'no session' or 'full' (past _limit).
FEWER_ROUND_TRIPS = f"""
DROP FUNCTION h2ochat_create_conversation(TEXT, TEXT, TEXT, TEXT, TEXT, INTEGER);

CREATE FUNCTION h2ochat_create_conversation(_id TEXT, _session TEXT, _model TEXT, _root TEXT, _preprompt TEXT,
                                            _limit INTEGER, _idle DOUBLE PRECISION, _touch DOUBLE PRECISION,
                                            OUT outcome TEXT, OUT created TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    seen TEXT;
BEGIN
    created := {NOW};
    IF _limit > 0 THEN
        -- The session's row is the lock: replicas creating for one session count in turn.
        SELECT seen_at INTO seen FROM sessions WHERE id = _session AND seen_at >= {clock("_idle")} FOR UPDATE;
    ELSE
        SELECT seen_at INTO seen FROM sessions WHERE id = _session AND seen_at >= {clock("_idle")};
    END IF;
    IF NOT FOUND THEN
        outcome := 'no session';
        RETURN;
    END IF;
    IF seen < {clock("_touch")} THEN
        UPDATE sessions SET seen_at = created WHERE id = _session;
    END IF;
    IF _limit > 0 AND (SELECT count(*) FROM conversations WHERE session_id = _session) >= _limit THEN
        outcome := 'full';
        RETURN;
    END IF;
    INSERT INTO conversations (id, session_id, model, created_at, updated_at, root_id, active_id)
        VALUES (_id, _session, _model, created, created, _root, _root);
    INSERT INTO messages (conversation_id, id, position, role, content, created_at, updated_at)
        VALUES (_id, _root, 0, 'system', _preprompt, created, created);
    outcome := 'ok';
END $$;
"""
