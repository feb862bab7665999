"""Export and import on SQLite (:mod:`.portability`): a mixin of :class:`~h2ochat.server.storage.sqlite.SQLiteStore`."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from h2ochat.protocol.export import ExportConversation
from h2ochat.server.storage import Conversation, MessageRow, SessionGone, TooManyConversations, now
from h2ochat.server.storage.portability import Imported, conversation_row, export_sql, message_rows, trees
from h2ochat.server.storage.sqlite_schema import transaction

__all__ = ["SQLitePortability"]

T = TypeVar("T")

_EXPORT = export_sql("?")
_INSERT_CONVERSATION = (
    "INSERT INTO conversations (id, session_id, model, title, created_at, updated_at, settings, root_id, active_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_MESSAGE = (
    "INSERT INTO messages (conversation_id, id, parent_id, position, role, content, status, finish_reason, "
    "interruption, generated_tokens, created_at, updated_at, left_out, score) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_IMPORTED = (
    "SELECT i.source_key FROM imports AS i JOIN conversations AS c ON c.id = i.conversation_id WHERE c.session_id = ?"
)


class SQLitePortability:
    if TYPE_CHECKING:  # the store's own, which this mixin uses

        async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T: ...

        def _live(self, db: sqlite3.Connection, session_id: str, *, accepted: bool = False) -> Any: ...

    async def export_conversations(self, session_id: str) -> list[tuple[Conversation, list[MessageRow]]]:
        return trees(await self._call(lambda db: db.execute(_EXPORT, (session_id,)).fetchall()))

    async def import_conversations(
        self, session_id: str, conversations: Sequence[tuple[str, ExportConversation]], limit: int = 0
    ) -> Imported:
        stamp = now()

        def write(db: sqlite3.Connection) -> Imported:
            with transaction(db):
                if self._live(db, session_id) is None:
                    raise SessionGone("This session is not one the server issued, or it expired")
                seen = {key for (key,) in db.execute(_IMPORTED, (session_id,))}
                fresh = []
                for key, conversation in conversations:
                    if key not in seen:
                        seen.add(key)
                        fresh.append((secrets.token_hex(12), key, conversation))
                if limit and fresh:
                    query = "SELECT count(*) FROM conversations WHERE session_id = ?"
                    (count,) = db.execute(query, (session_id,)).fetchone()
                    if count + len(fresh) > limit:
                        raise TooManyConversations(limit)
                for conversation_id, key, conversation in fresh:
                    db.execute(_INSERT_CONVERSATION, conversation_row(conversation_id, session_id, conversation))
                    db.executemany(_INSERT_MESSAGE, message_rows(conversation_id, conversation))
                    db.execute("INSERT INTO imports VALUES (?, ?, ?)", (conversation_id, key, stamp))
                return Imported([made[0] for made in fresh], len(conversations) - len(fresh))

        return await self._call(write)
