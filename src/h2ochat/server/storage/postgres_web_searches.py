"""Web searches on PostgreSQL (:mod:`.web_searches`): a mixin of the PostgreSQL store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from h2ochat.server.storage.web_searches import StoredSearch

if TYPE_CHECKING:
    from h2ochat.server.storage.postgres_connections import Connections

__all__ = ["PostgresWebSearches"]

_COLUMNS = "id, conversation_id, prompt, data, answer_id, created_at"


class PostgresWebSearches:
    if TYPE_CHECKING:  # the store's own connections, which this mixin uses
        _db: Connections

    async def save_web_search(self, search: StoredSearch, session_id: str) -> None:
        await self._db.execute(
            "INSERT INTO web_searches (id, session_id, conversation_id, prompt, data, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            *(search.id, session_id, search.conversation_id, search.prompt, search.data, search.created_at),
        )

    async def web_search(self, search_id: str, session_id: str) -> StoredSearch | None:
        sql = f"SELECT {_COLUMNS} FROM web_searches WHERE id = $1 AND session_id = $2"
        found = await self._db.one(sql, search_id, session_id)
        return None if found is None else StoredSearch(*found)

    async def attach_web_search(self, search_id: str, answer_id: str) -> None:
        await self._db.execute("UPDATE web_searches SET answer_id = $1 WHERE id = $2", answer_id, search_id)

    async def answer_searches(self, conversation_id: str) -> list[StoredSearch]:
        sql = f"SELECT {_COLUMNS} FROM web_searches WHERE conversation_id = $1 AND answer_id IS NOT NULL"
        return [StoredSearch(*row) for row in await self._db.all(sql, conversation_id)]
