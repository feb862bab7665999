"""Web searches on SQLite (:mod:`.web_searches`): a mixin of :class:`~h2ochat.server.storage.sqlite.SQLiteStore`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from h2ochat.server.storage.web_searches import StoredSearch

__all__ = ["SQLiteWebSearches"]

T = TypeVar("T")
_COLUMNS = "id, conversation_id, prompt, data, answer_id, created_at"


class SQLiteWebSearches:
    if TYPE_CHECKING:  # the store's own, which this mixin uses

        async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T: ...

    async def save_web_search(self, search: StoredSearch, session_id: str) -> None:
        row = (search.id, session_id, search.conversation_id, search.prompt, search.data, search.created_at)

        def insert(db: sqlite3.Connection) -> None:
            with db:
                db.execute(
                    "INSERT INTO web_searches (id, session_id, conversation_id, prompt, data, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )

        await self._call(insert)

    async def web_search(self, search_id: str, session_id: str) -> StoredSearch | None:
        def read(db: sqlite3.Connection) -> StoredSearch | None:
            sql = f"SELECT {_COLUMNS} FROM web_searches WHERE id = ? AND session_id = ?"
            found = db.execute(sql, (search_id, session_id)).fetchone()
            return None if found is None else StoredSearch(*found)

        return await self._call(read)

    async def attach_web_search(self, search_id: str, answer_id: str) -> None:
        def update(db: sqlite3.Connection) -> None:
            with db:
                db.execute("UPDATE web_searches SET answer_id = ? WHERE id = ?", (answer_id, search_id))

        await self._call(update)

    async def answer_searches(self, conversation_id: str) -> list[StoredSearch]:
        def read(db: sqlite3.Connection) -> list[StoredSearch]:
            sql = f"SELECT {_COLUMNS} FROM web_searches WHERE conversation_id = ? AND answer_id IS NOT NULL"
            return [StoredSearch(*row) for row in db.execute(sql, (conversation_id,))]

        return await self._call(read)
