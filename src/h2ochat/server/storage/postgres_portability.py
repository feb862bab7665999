"""Export and import on PostgreSQL (:mod:`.portability`): a mixin of
:class:`~h2ochat.server.storage.postgres.PostgresStore`.

An import locks the session's row first (as creating a conversation does), so two imports of one
file into one session, on two replicas, take turns: the second skips what the first wrote.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from h2ochat.protocol.export import ExportConversation
from h2ochat.server.storage import Conversation, MessageRow, SessionGone, TooManyConversations
from h2ochat.server.storage.portability import Imported, conversation_row, export_sql, message_rows, trees
from h2ochat.server.storage.postgres_sql import NOW

if TYPE_CHECKING:
    from h2ochat.server.storage.postgres_connections import Connections

__all__ = ["PostgresPortability"]

_EXPORT = export_sql("$1")
_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, session_id, model, title, created_at, updated_at, settings, root_id, active_id) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_id, id, parent_id, position, role, content, status, finish_reason, "
    "interruption, generated_tokens, created_at, updated_at, left_out, score) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)
_IMPORTED = (
    "SELECT i.source_key FROM imports AS i JOIN conversations AS c ON c.id = i.conversation_id WHERE c.session_id = $1"
)


class PostgresPortability:
    if TYPE_CHECKING:  # the store's own connections, which this mixin uses
        _db: Connections

    async def export_conversations(self, session_id: str) -> list[tuple[Conversation, list[MessageRow]]]:
        return trees(await self._db.all(_EXPORT, session_id))

    async def import_conversations(
        self, session_id: str, conversations: Sequence[tuple[str, ExportConversation]], limit: int = 0
    ) -> Imported:
        async with self._db.pooled() as db, db.transaction():
            if await db.fetchval("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id) is None:
                raise SessionGone("This session is not one the server issued, or it expired")
            seen = {row[0] for row in await db.fetch(_IMPORTED, session_id)}
            fresh = []
            for key, conversation in conversations:
                if key not in seen:
                    seen.add(key)
                    fresh.append((secrets.token_hex(12), key, conversation))
            if limit and fresh:
                count = await db.fetchval("SELECT count(*) FROM conversations WHERE session_id = $1", session_id)
                if count + len(fresh) > limit:
                    raise TooManyConversations(limit)
            for conversation_id, key, conversation in fresh:
                await db.execute(_INSERT_CONVERSATION, *conversation_row(conversation_id, session_id, conversation))
                await db.executemany(_INSERT_MESSAGE, message_rows(conversation_id, conversation))
                await db.execute(f"INSERT INTO imports VALUES ($1, $2, {NOW})", conversation_id, key)
        return Imported([made[0] for made in fresh], len(conversations) - len(fresh))
