"""The PostgreSQL store's statements that several methods share, and its clock.

Every time stored or compared is the database's (``now()``), written as SQLite writes its own
(ISO 8601 text in UTC), so both stores return the same rows.
"""

from __future__ import annotations

from h2ochat.server.storage import HAS_CHILDREN

__all__ = ["CHECKPOINT", "EPOCH", "FINISH", "INTERRUPT", "NOW", "RESUME", "clock"]


def clock(seconds_ago: str | None = None) -> str:
    """SQL for the database's time as stored (ISO 8601 text in UTC, as :func:`.now` writes it), or
    ``seconds_ago`` (a placeholder, e.g. ``$2``) seconds before it. ``now()`` is the transaction's
    start: one time for every row and column a transaction writes."""
    moment = "now()" if seconds_ago is None else f"(now() - make_interval(secs => {seconds_ago}))"
    return f"""to_char({moment} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""


NOW = clock()
# The rate limit's entries are seconds since the epoch, taken when the bucket's lock is held.
EPOCH = "extract(epoch FROM clock_timestamp())::float8"
INTERRUPT = (
    f"UPDATE messages SET status = 'interrupted', interruption = 'server stopped', updated_at = {NOW} "
    "WHERE status = 'generating'"
)
CHECKPOINT = (
    f"UPDATE messages SET content = $1, generated_tokens = $2, updated_at = {NOW} "
    "WHERE conversation_id = $3 AND id = $4 AND status = 'generating'"
)
# An answer is continued only while nothing follows it, and by one request at a time.
RESUME = (
    "UPDATE messages SET status = 'generating', finish_reason = NULL, interruption = NULL, replica = $1, "
    f"updated_at = {NOW} WHERE conversation_id = $2 AND id = $3 AND role = 'assistant' "
    f"AND status <> 'generating' AND NOT {HAS_CHILDREN}"
)
FINISH = (
    "UPDATE messages SET content = $1, status = $2, finish_reason = $3, interruption = $4, "
    f"generated_tokens = $5, updated_at = {NOW} WHERE conversation_id = $6 AND id = $7"
)
