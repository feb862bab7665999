"""Devices (docs/protocol.md section 17): several browsers attached to one session.

A session's own cookie is its id, as it always was: that browser is the session's *first device*,
which has no row here (every session made before migration ``013_devices`` is one such device, with
nothing to convert). Another browser joins with a one-time code the session asked for: linking spends
the code and gives that browser a device of its own, a row in ``devices`` holding the hash of its
secret (its cookie, 48 characters, a length no session id has). Detaching a device deletes its row, so
its cookie names nothing from its next request on; detaching the first device moves the session to a
fresh id (:meth:`Store.renew_session`), which the other devices follow.

Codes and secrets are stored as SHA-256 hashes, so the database alone opens no session. A session has
at most one live code: asking for another replaces it.

:class:`Devices` is the part of :class:`~h2ochat.server.storage.Store` that does this; ``sqlite_devices``
and ``postgres_devices`` implement it, and ``DEVICES_SCHEMA`` is migration ``013_devices`` on both.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from h2ochat.server.storage import Session

__all__ = [
    "CODE",
    "CODE_ALPHABET",
    "DEVICES_SCHEMA",
    "DEVICE_SECRET",
    "FIRST_DEVICE",
    "Device",
    "Devices",
    "digest",
    "new_code",
    "new_secret",
    "normal_code",
]

# No 0/O, 1/I/L, nor U (its look-alike V stays): 30 characters, read aloud and typed without doubt.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE = re.compile(f"[{CODE_ALPHABET}]{{8}}")  # 8 of them: about 39 bits
DEVICE_SECRET = re.compile(r"[A-Za-z0-9_-]{48}")  # secrets.token_urlsafe(36); session ids are 43 (or 36)
FIRST_DEVICE = "first"  # the id the session's own browser is listed under


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))


def normal_code(text: str) -> str | None:
    """A code as typed (any case, spaces or dashes anywhere) in its stored form, or None if it cannot be one."""
    code = re.sub(r"[\s-]", "", text).upper()
    return code if CODE.fullmatch(code) else None


def new_secret() -> str:
    return secrets.token_urlsafe(36)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Device:
    id: str  # FIRST_DEVICE for the session's own browser
    label: str  # from its User-Agent, in words ("Chrome on Linux"); the first device's is unknown: ""

    created_at: str
    seen_at: str


DEVICES_SCHEMA = """
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE INDEX devices_by_session ON devices (session_id);
CREATE TABLE device_codes (
    code_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL UNIQUE,
    expires_at TEXT NOT NULL
)
"""


class Devices(Protocol):
    """Devices, a part of the server's database (:class:`~h2ochat.server.storage.Store`)."""

    async def device_code(self, session_id: str, code: str, ttl: float) -> str:
        """Store ``code`` (hashed) as the session's one live code for ``ttl`` seconds, replacing any
        other; the time it expires."""
        ...

    async def link_device(self, code: str, secret: str, label: str) -> str | None:
        """Spend a live ``code`` and attach a new device with ``secret`` to its session, in one
        transaction; the session's id, or None for a code unknown, spent or expired alike."""
        ...

    async def device_session(self, secret: str) -> tuple[Session, str] | None:
        """The live session a device's ``secret`` names and the device's id, recording the use; None
        for a secret of no device (never issued, or detached)."""
        ...

    async def devices(self, session_id: str) -> list[Device]:
        """The session's devices, its first device first, then the others oldest first."""
        ...

    async def detach_device(self, session_id: str, device_id: str) -> bool:
        """Detach one of the session's devices (not the first: :meth:`renew_session` does that);
        False when it has none by that id."""
        ...
