"""What the server keeps: sessions, conversations and their messages, behind one interface.

:class:`Store` names what the server does with its data (issue a session,
create a conversation, begin an exchange, checkpoint an answer, finish it…),
not the tables. ``open_store(db)`` picks the implementation from the ``db``
setting: ``postgresql://…`` (or ``postgres://…``) is PostgreSQL
(:mod:`.postgres`, for several replicas on one database); a file path,
``:memory:`` or ``sqlite:///path`` is SQLite (:mod:`.sqlite`, one process).

An exchange (the user's message and the answer) is written when generation
starts, with the answer marked ``generating`` and the replica generating it;
its text is saved every few seconds while it grows, and once more, complete,
when it ends. A crash in between leaves it ``generating``: on SQLite the next
start marks such answers ``interrupted``, with the text saved last; on
PostgreSQL every replica renews a lease on the database every few seconds and
any replica marks the answers of a replica whose lease ran out.
Every method that takes a ``session_id`` answers for that session's data
only: another session's conversation is treated exactly like a missing one.

Sessions are issued by the server (:meth:`Store.new_session`): an id the
server did not issue, or one idle longer than ``session_idle``, is no session.
Idle sessions are deleted with their conversations by :meth:`Store.upkeep`,
which the server calls every few seconds; so are conversations that never got
a message (:data:`ORPHANS`). The methods a request may begin with (create a
conversation, read one with its messages, delete one) check the session and
record its use in their own round trip, so that such a request needs no
lookup of its own first (the server's ``sessions`` middleware).

Errors (the routes turn each into a 4xx or a 503)::

    StoreError
     ├── StoreUnavailable        the database cannot be reached now
     ├── SchemaTooNew            the database was migrated by a newer h2ochat
     ├── SessionGone             the session named is not live (never issued, expired or renewed)
     ├── ConversationGone        deleted while the request was under way
     ├── MessageIdTaken          another request stored a message with this id first
     ├── TooManyConversations    the session holds the most conversations allowed
     ├── TooManyMessages         the conversation holds the most messages allowed
     ├── TooManyRunning          the session has the most answers running allowed
     └── RunIdTaken              another answer has this generation id

A conversation is a tree (:mod:`h2ochat.protocol.tree`): it is created with a
system root message, whose text is its system prompt; every other message has
a parent; ``position`` numbers the messages in the order they were created
(parents first). The conversation remembers the leaf of the branch the person
looks at (``active_id``), so every tab and device shows the same one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, Protocol

from h2ochat.server.storage.devices import Devices
from h2ochat.server.storage.people import People
from h2ochat.server.storage.portability import Portability
from h2ochat.server.storage.runs import RunRow, Runs
from h2ochat.server.storage.shares import Shares
from h2ochat.server.storage.usage import Usage
from h2ochat.server.storage.web_searches import WebSearches

__all__ = [
    "DELETE_SUBTREE",
    "HAS_CHILDREN",
    "SUBTREE",
    "ORPHANS",
    "SELECT_CONVERSATION",
    "SELECT_MESSAGE",
    "SELECT_TREE",
    "ConversationGone",
    "Conversation",
    "MessageIdTaken",
    "MessageRow",
    "NewConversation",
    "RunIdTaken",
    "RunRow",
    "SchemaTooNew",
    "Session",
    "SessionGone",
    "StopListener",
    "Store",
    "StoreError",
    "StoreOptions",
    "StoreUnavailable",
    "TooManyConversations",
    "TooManyMessages",
    "TooManyRunning",
    "is_postgres",
    "like_pattern",
    "now",
    "open_store",
    "redact",
    "tree_of",
]


def now(seconds_ago: float = 0.0) -> str:
    """A time as stored: ISO 8601 in UTC with milliseconds, e.g. ``2026-11-29T21:03:04.123Z``.

    Stored times compare correctly as strings, so ``now(60)`` is the cutoff for "the last minute".
    """
    moment = datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StoreError(Exception):
    """Something the store could not do; the message says why."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (down, restarting, unreachable): try again later."""


class SchemaTooNew(StoreError):
    """The database holds migrations this version does not know: a newer h2ochat migrated it."""


class SessionGone(StoreError):
    """The session a request named is not live: the server never issued it, it expired, or it was renewed."""


class ConversationGone(StoreError):
    """The conversation was deleted while this request was under way."""


class MessageIdTaken(StoreError):
    """Another request stored a message with this id in this conversation first."""


class TooManyConversations(StoreError):
    """The session already holds the most conversations a session may have."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This session already has {limit} conversations, the most this server keeps per session; "
            "delete some to start new ones"
        )
        self.limit = limit


class TooManyMessages(StoreError):
    """The conversation already holds the most messages a conversation may have."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This conversation already has {limit} messages, the most this server keeps in one conversation; "
            "start a new conversation"
        )
        self.limit = limit


class TooManyRunning(StoreError):
    """The session has the most answers running that a session may have."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"This session has {limit} answers running already, the most this server runs per session "
            "(max_running_answers): wait for one to end, or stop one, then send again"
        )
        self.limit = limit


class RunIdTaken(StoreError):
    """Another answer was generated under this generation id."""


@dataclass(frozen=True)
class StoreOptions:
    pool_size: int = 10  # PostgreSQL connections per replica
    session_idle: float = 30 * 86400.0  # seconds after its last use a session expires, with its conversations
    lease: float = 15.0  # seconds without a heartbeat after which a replica's answers are marked interrupted
    orphan_ttl: float = 3600.0  # seconds a conversation that never got a message is kept (ORPHANS)
    run_log_keep: float = 600.0  # seconds an ended run keeps its whole event log, for late readers
    # Each model's preprompt by name: the migration to trees makes it the system root of the
    # conversations that had none (a model no longer served gets an empty one).
    preprompts: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def touch_after(self) -> float:
        """Seconds after which a session's use is written again: a read mostly stays a read."""
        return min(60.0, self.session_idle / 4)


@dataclass(frozen=True)
class Session:
    id: str
    active_model: str | None
    share_conversations: bool
    ethics_accepted_at: str | None
    # The person's "Search the web" choice (searchEnabled in the settings of both generations).
    search_enabled: bool = False


@dataclass(frozen=True)
class Conversation:
    id: str
    session_id: str
    model: str
    title: str
    created_at: str
    updated_at: str
    # Generation parameters the person chose for this conversation (temperature, max_new_tokens).
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    root_id: str = ""  # the system root message
    active_id: str = ""  # the leaf of the branch the person last looked at

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Conversation:
        """A row of ``SELECT_CONVERSATION``: the settings come as JSON text."""
        id_, session_id, model, title, created_at, updated_at, settings, root_id, active_id = row
        decoded = json.loads(settings) if settings else {}
        return cls(id_, session_id, model, title, created_at, updated_at, decoded, root_id, active_id)


@dataclass(frozen=True)
class MessageRow:
    id: str
    position: int
    role: str
    content: str
    status: str  # generating | done | interrupted
    finish_reason: str | None
    interruption: str | None
    generated_tokens: int | None
    created_at: str
    updated_at: str
    left_out: int  # an answer's: earlier messages that did not fit the model's context and were not sent
    parent_id: str | None  # None for the system root
    score: int  # an answer's vote: 1, -1 or 0


class NewConversation(NamedTuple):
    """What :meth:`Store.create_conversation` stored: all the create answer shows, with no read back."""

    conversation: Conversation
    root: MessageRow  # the system root, its only message

    @property
    def id(self) -> str:
        return self.conversation.id

    @classmethod
    def stored(cls, ids: tuple[str, str, str], model: str, preprompt: str, stamp: str) -> NewConversation:
        """The rows a creation wrote, from its values: ``ids`` are the conversation's, the session's and
        the root's; ``stamp`` the time it was stored at."""
        conversation_id, session_id, root_id = ids
        conversation = Conversation(conversation_id, session_id, model, "New Chat", stamp, stamp, {}, root_id, root_id)
        root = MessageRow(root_id, 0, "system", preprompt, "done", None, None, None, stamp, stamp, 0, None, 0)
        return cls(conversation, root)


StopListener = Callable[[str, str], object]
"""Called with (conversation id, reason) when a stop is requested on any replica."""


# The columns of the row types, in their order (their fields are named as the columns): the same SQL
# reads them on either database.
_CONVERSATION_COLUMNS = [column.name for column in fields(Conversation)]
_MESSAGE_COLUMNS = [column.name for column in fields(MessageRow)]
SELECT_CONVERSATION = f"SELECT {', '.join(_CONVERSATION_COLUMNS)} FROM conversations"
SELECT_MESSAGE = f"SELECT {', '.join(_MESSAGE_COLUMNS)} FROM messages"
# A conversation of a session with its whole tree, in one read (a request that posts a message needs
# both): the conversation's columns on every row, then one message's, in the order they were created.
# ``{c}`` and ``{s}`` are the placeholders of the conversation's and the session's ids.
SELECT_TREE = (
    f"SELECT {', '.join('c.' + name for name in _CONVERSATION_COLUMNS)}, "
    f"{', '.join('m.' + name for name in _MESSAGE_COLUMNS)} FROM conversations AS c "
    "LEFT JOIN messages AS m ON m.conversation_id = c.id WHERE c.id = {c} AND c.session_id = {s} ORDER BY m.position"
)


def tree_of(rows: list[tuple[Any, ...]]) -> tuple[Conversation, list[MessageRow]] | None:
    """The conversation and its messages from the rows of :data:`SELECT_TREE`; None for no rows."""
    if not rows:
        return None
    split = len(_CONVERSATION_COLUMNS)
    messages = [MessageRow(*row[split:]) for row in rows if row[split] is not None]
    return Conversation.from_row(tuple(rows[0][:split])), messages


# An answer with an answer or a question after it: ``messages`` is the outer row.
HAS_CHILDREN = (
    "EXISTS (SELECT 1 FROM messages AS c WHERE c.conversation_id = messages.conversation_id "
    "AND c.parent_id = messages.id)"
)
# A message and its descendants (never the root), for ``WITH RECURSIVE``, and their deletion; ``{c}``
# and ``{m}`` are the placeholders of the conversation's and the message's ids.
SUBTREE = (
    "doomed (id) AS (SELECT id FROM messages WHERE conversation_id = {c} AND id = {m} AND parent_id IS NOT NULL "
    "UNION ALL SELECT m.id FROM messages AS m JOIN doomed ON m.parent_id = doomed.id WHERE m.conversation_id = {c})"
)
DELETE_SUBTREE = "DELETE FROM messages WHERE conversation_id = {c} AND id IN (SELECT id FROM doomed)"

# Conversations created and then left: no message but the system root and no new title since they were
# created (their first message never came, e.g. a client that lost the creation's answer), and that long ago.
# ``{cutoff}`` is the database's expression for the oldest time kept. "updated_at = created_at" is
# what a small partial index holds (conversations_untouched), so the sweep reads only those rows.
ORPHANS = (
    "DELETE FROM conversations WHERE updated_at = created_at AND updated_at < {cutoff} AND title = 'New Chat' "
    "AND NOT EXISTS (SELECT 1 FROM messages WHERE conversation_id = conversations.id AND role <> 'system')"
)


class Store(Runs, Shares, Portability, Devices, WebSearches, People, Usage, Protocol):
    """The server's database (its runs: :class:`~h2ochat.server.storage.runs.Runs`; shared links:
    :class:`~h2ochat.server.storage.shares.Shares`; export and import:
    :class:`~h2ochat.server.storage.portability.Portability`; devices:
    :class:`~h2ochat.server.storage.devices.Devices`; web searches:
    :class:`~h2ochat.server.storage.web_searches.WebSearches`; people:
    :class:`~h2ochat.server.storage.people.People`; use: :class:`~h2ochat.server.storage.usage.Usage`)."""

    @property
    def statements(self) -> int:
        """Statements sent to the database since the store opened (BEGIN and COMMIT included; a batch
        sent in one round trip counts once): the benchmark reports them per conversation."""
        ...

    async def close(self) -> None: ...

    async def upkeep(self) -> None:
        """One round of background work: renew this replica's lease, mark the answers of replicas
        whose lease ran out as interrupted, delete expired sessions, conversations left without a
        message for ``orphan_ttl`` (:data:`ORPHANS`) and old rate-limit entries, and retry final
        saves that failed while the database was away."""
        ...

    # Sessions
    async def new_session(self) -> str:
        """Issue a session: a stored, unguessable id (256 random bits)."""
        ...

    async def session(self, session_id: str) -> Session | None:
        """The session if the server issued it and it has not expired; a use keeps it alive."""
        ...

    async def renew_session(self, session_id: str) -> str:
        """Move a session, with its conversations, to a fresh id (the settings step), and return that id."""
        ...

    async def save_settings(
        self, session_id: str, active_model: str | None, share: bool, accepted: bool, search: bool | None = None
    ) -> str:
        """Save a session's settings and return its id; without one (``""``), issue a session that holds
        them, as :meth:`new_session` would, in the same statement (the settings step of a new visitor).
        ``active_model`` and ``search`` left ``None`` keep what the session had."""
        ...

    async def admit(self, bucket: str, per_minute: int) -> float:
        """Count one event in ``bucket`` if fewer than ``per_minute`` happened in the last 60 s.

        Returns 0 when counted, else the seconds until one is allowed. Counted in the database,
        so every replica shares the count; entries older than a minute are deleted.
        """
        ...

    # Conversations
    async def create_conversation(
        self, session_id: str, model: str, limit: int = 0, *, preprompt: str = ""
    ) -> NewConversation:
        """A new conversation (its id: 24 hex characters, like chat-ui's ObjectIds), with its system root
        message (a UUID) holding ``preprompt``, which is also its active branch; returned as stored.

        The session is checked and its use recorded in the same round trip, as :meth:`session` would:
        raises :class:`SessionGone` if it is not live, :class:`TooManyConversations` if it already has
        ``limit`` conversations (0: no limit).
        """
        ...

    async def conversation(self, conversation_id: str, session_id: str) -> Conversation | None: ...

    async def conversation_with_messages(
        self, conversation_id: str, session_id: str, *, accepted: bool = False
    ) -> tuple[Conversation, list[MessageRow]] | None:
        """The conversation with its messages, as :meth:`conversation` and :meth:`messages` return them,
        read together in one round trip with the session's check and use (as :meth:`session`); None when
        it is not the session's, or the session is not live (with ``accepted``: or has not accepted the
        welcome gate)."""
        ...

    async def conversations(self, session_id: str) -> list[Conversation]:
        """The session's conversations, the most recently updated first."""
        ...

    async def search_conversations(self, session_id: str, query: str) -> list[Conversation]:
        """The session's conversations whose title or any message holds ``query`` (ASCII case folded),
        the most recently updated first."""
        ...

    async def delete_conversation(self, conversation_id: str, session_id: str, *, stop: str = "") -> bool:
        """Delete the conversation with its messages; with ``stop`` (the reason), its generations are
        stopped wherever they run, as by :meth:`request_stop` (on PostgreSQL in the same statement).
        False when it is not the session's or the session is not live, checked and used (as :meth:`session`)
        in the same round trip."""
        ...

    async def rename_conversation(
        self, conversation_id: str, session_id: str, title: str, *, only_if: str | None = None
    ) -> bool:
        """Set the title; with ``only_if``, only while the title is still that one."""
        ...

    async def save_conversation_settings(
        self, conversation_id: str, session_id: str, settings: Mapping[str, Any]
    ) -> bool:
        """Replace the conversation's settings (checked by the caller); False when it is not the session's."""
        ...

    # Messages
    async def messages(self, conversation_id: str) -> list[MessageRow]:
        """A conversation's messages, the whole tree, in the order they were created (the caller has
        checked ownership)."""
        ...

    async def begin_exchange(
        self,
        conversation_id: str,
        parent_id: str,
        user: tuple[str, str] | None,
        answer_id: str,
        *,
        left_out: int = 0,
        limit: int = 0,
    ) -> None:
        """Store an exchange under ``parent_id`` and make its answer the active branch, atomically:
        ``user`` (id, text) as the parent's child with an empty answer under it, or, without ``user``
        (a regenerated answer), the empty answer as the parent's child. The answer is marked
        ``generating``; ``left_out`` is the number of earlier messages its prompt could not hold.

        Raises :class:`TooManyMessages` when the conversation would pass ``limit`` messages (0: no
        limit), :class:`ConversationGone` or :class:`MessageIdTaken` when a concurrent request won.
        """
        ...

    async def resume_answer(self, conversation_id: str, answer_id: str) -> bool:
        """Mark a finished answer ``generating`` again, to be continued (``is_continue``); False when
        it has an answer after it (it is not a leaf) or is being generated already."""
        ...

    async def set_active(self, conversation_id: str, leaf_id: str) -> bool:
        """Make the branch ending at ``leaf_id`` the one shown; False when it is no message there."""
        ...

    async def delete_message(self, conversation_id: str, message_id: str, active_id: str) -> int:
        """Delete a message with all its descendants and make ``active_id`` the active leaf (chosen by
        the caller, outside what is deleted); the number of messages deleted (0: no such message)."""
        ...

    async def set_preprompt(self, conversation_id: str, preprompt: str) -> None:
        """Replace the system prompt (the root's text); answers begun from now on use it."""
        ...

    async def vote(self, conversation_id: str, message_id: str, score: int) -> bool:
        """Record a person's vote (1, -1, or 0 to take it back) on an answer; False when no such answer."""
        ...

    async def save_partial(self, conversation_id: str, answer_id: str, content: str, generated_tokens: int) -> None:
        """A checkpoint: the text of an answer still being generated (it stays ``generating``).

        Best effort: a checkpoint the database cannot take now is skipped (the next carries the text).
        """
        ...

    async def finish_answer(
        self,
        conversation_id: str,
        answer_id: str,
        content: str,
        *,
        finish_reason: str | None,
        interruption: str | None,
        generated_tokens: int,
    ) -> None:
        """Complete an answer: ``done`` with its finish reason, or ``interrupted`` with why.

        If the database is away, the save is kept and retried by :meth:`upkeep`.
        """
        ...

    # Stopping generations on every replica
    def on_stop(self, listener: StopListener) -> None:
        """Call ``listener`` whenever :meth:`request_stop` is called, on this replica or any other."""
        ...

    async def request_stop(self, conversation_id: str, reason: str) -> None:
        """Stop the generations of a conversation wherever they run."""
        ...


_URL_PASSWORD = re.compile(r"(?<=://)([^:/@]*):[^@/]*@")


def redact(db: str) -> str:
    """The ``db`` setting fit for logs and errors: a URL's password replaced by ``***``."""
    redacted = _URL_PASSWORD.sub(r"\1:***@", db)
    # A password given as a query parameter (?password=…) is hidden the same way.
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", redacted)


def like_pattern(query: str) -> str:
    """A ``LIKE … ESCAPE '\\'`` pattern finding ``query`` anywhere, its own ``%`` and ``_`` matching themselves."""
    return "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


async def open_store(db: str, options: StoreOptions | None = None) -> Store:
    """The store for the ``db`` setting, opened and migrated."""
    options = options or StoreOptions()
    if is_postgres(db):
        from h2ochat.server.storage.postgres import PostgresStore

        return await PostgresStore.open(db, options)
    from h2ochat.server.storage.sqlite import SQLiteStore

    path = db.removeprefix("sqlite:///") if db.startswith("sqlite:///") else db
    return await SQLiteStore.open(path, options)
