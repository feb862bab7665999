"""People (README "People: sign-in for teams"): a person named by the deployment's identity proxy.

A person owns one session, made when they are first seen, and every browser they come from is served
under it: their history is the same everywhere, and every rule of sessions (ownership, the welcome gate,
limits) holds for them unchanged. A person's session never idles out: the upkeep keeps it seen, while
``people.seen_at`` records when the person was last seen. Nothing here stores a secret: a person is who
the trusted proxy says.

:class:`People` is the part of :class:`~h2ochat.server.storage.Store` that does this; ``sqlite_people``
and ``postgres_people`` implement it, and ``PEOPLE_SCHEMA`` is migration ``016_people`` on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from h2ochat.server.storage import Session

__all__ = ["PEOPLE_SCHEMA", "People", "Person"]


@dataclass(frozen=True)
class Person:
    id: str
    login: str  # as the proxy names them, lower-cased: an e-mail address or a user name
    name: str  # from the name header, or "" when none came
    session_id: str


PEOPLE_SCHEMA = """
CREATE TABLE people (
    id TEXT PRIMARY KEY,
    login TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    session_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    seen_at TEXT NOT NULL
)
"""


class People(Protocol):
    """People, a part of the server's database (:class:`~h2ochat.server.storage.Store`)."""

    async def person_session(self, login: str, name: str) -> tuple[Person, Session]:
        """The person ``login`` names and their session, made together the first time (in one
        transaction, so two replicas seeing a new person at once make one), the use recorded and
        ``name`` kept when one is given."""
        ...
