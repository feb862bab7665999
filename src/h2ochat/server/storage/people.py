"""People (README "People: sign-in for teams"): a person named by the deployment's identity proxy.

A person owns one session, made when they are first seen, and every browser they come from is served
under it: their history is the same everywhere, and every rule of sessions (ownership, the welcome gate,
limits) holds for them unchanged. A person's session never idles out: the upkeep keeps it seen, while
``people.seen_at`` records when the person was last seen. Nothing here stores a secret: a person is who
the trusted proxy says, or whose API key a request carries (stored as a SHA-256 hash, so the database
alone opens nothing).

:class:`People` is the part of :class:`~h2ochat.server.storage.Store` that does this; ``sqlite_people``
and ``postgres_people`` implement it, and ``PEOPLE_SCHEMA`` is migration ``016_people`` on both.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from h2ochat.server.storage import Session

__all__ = [
    "API_KEY",
    "KEY_NAME_RULE",
    "LOGIN",
    "LOGINS_SCHEMA",
    "Login",
    "PEOPLE_SCHEMA",
    "ApiKey",
    "People",
    "Person",
    "key_name",
    "new_api_key",
]

# A person's login, as every way in takes it (lower-cased first): an e-mail address (254 at most) or a user name.
LOGIN = re.compile(r"[^\s\x00-\x1f\x7f]{1,254}")
# "h2o_" and 43 URL-safe characters (256 random bits): told apart from the deployment's shared key.
API_KEY = re.compile(r"h2o_[A-Za-z0-9_-]{43}")


MAX_KEY_NAME = 100
KEY_NAME_RULE = f"A key's name is 1 to {MAX_KEY_NAME} printable characters, to tell it from the others (e.g. laptop)"


def new_api_key() -> str:
    return "h2o_" + secrets.token_urlsafe(32)


def key_name(text: str) -> str | None:
    """A key's name as given, trimmed; None when it cannot be one (:data:`KEY_NAME_RULE`)."""
    name = text.strip()
    return name if 0 < len(name) <= MAX_KEY_NAME and name.isprintable() else None


@dataclass(frozen=True)
class Person:
    id: str
    login: str  # as the proxy names them, lower-cased: an e-mail address or a user name
    name: str  # from the name header, or "" when none came
    session_id: str


@dataclass(frozen=True)
class ApiKey:
    """A person's API key as listed: never the key itself, which is shown once and stored as a hash."""

    id: str
    name: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


PEOPLE_SCHEMA = """
CREATE TABLE people (
    id TEXT PRIMARY KEY,
    login TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    session_id TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX api_keys_by_person ON api_keys (person_id)
"""

# Sign-ins under way (OpenID Connect): what the callback checks, kept until it comes or expires, in the
# database so that the callback may reach any replica.
LOGINS_SCHEMA = """
CREATE TABLE logins (
    state TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    verifier TEXT NOT NULL,
    next TEXT NOT NULL,
    session_id TEXT NOT NULL,
    expires_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Login:
    """A sign-in under way: the ``nonce`` the ID token must carry, the PKCE ``verifier``, the page to
    return to, and the anonymous session (or "") whose conversations go to the person."""

    nonce: str
    verifier: str
    next: str
    session_id: str


class People(Protocol):
    """People, a part of the server's database (:class:`~h2ochat.server.storage.Store`)."""

    async def person_session(self, login: str, name: str) -> tuple[Person, Session]:
        """The person ``login`` names and their session, made together the first time (in one
        transaction, so two replicas seeing a new person at once make one), the use recorded and
        ``name`` kept when one is given."""
        ...

    async def session_person(self, session_id: str) -> Person | None:
        """The person whose session this is, if any (a browser signed in holds a device of it)."""
        ...

    async def merge_session(self, old: str, into: str) -> None:
        """Move everything of session ``old`` (conversations, shares, web searches, use) to ``into``."""
        ...

    async def begin_login(self, state: str, login: Login, ttl: float) -> None:
        """Keep a sign-in under way for ``ttl`` seconds, under its ``state``."""
        ...

    async def take_login(self, state: str) -> Login | None:
        """The sign-in under ``state``, once: spent by this call; None when unknown, spent or expired."""
        ...

    async def create_api_key(self, login: str, name: str, key_hash: str) -> ApiKey:
        """A new key for the person ``login`` names (made if never seen), stored by its hash."""
        ...

    async def api_keys(self, login: str) -> list[ApiKey]:
        """The person's keys, oldest first, revoked ones included; [] for a person never seen."""
        ...

    async def revoke_api_key(self, login: str, key_id: str) -> bool:
        """Revoke one of the person's keys; False when they have no live key by that id."""
        ...

    async def api_key_person(self, key_hash: str) -> tuple[Person, Session, str] | None:
        """The person a live key names, their session and the key's id, the use recorded (at most once
        every ``touch_after`` seconds); None for a key revoked or never issued alike."""
        ...
