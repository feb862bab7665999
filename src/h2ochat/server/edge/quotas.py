"""The limits of whoever is asking (README "Quotas and use"): a person's own over the server's.

``rate_limit_per_minute``, ``max_conversations`` and ``tokens_per_day`` hold per session, and a person
has one session, so each holds per person; a ``[[users]]`` table gives one person other values. The
day's tokens are counted in the database (storage/usage.py), so the quota holds across replicas. An
answer is refused once the day's tokens are spent; the answer that spends them runs to its end.
"""

from __future__ import annotations

from aiohttp import web

from h2ochat.server.config import Limits
from h2ochat.server.edge.http import CONFIG, PERSON, SESSION, STORE, ApiError
from h2ochat.server.storage.usage import PersonUsage, day, seconds_to_midnight

__all__ = [
    "MAX_DAYS",
    "check_sign_in",
    "check_tokens",
    "count_accepted",
    "limits_of",
    "metered",
    "people_usage",
    "record_answer",
    "record_request",
]


def limits_of(request: web.Request) -> Limits:
    person = request.get(PERSON)
    return request.app[CONFIG].limits(person.login if person is not None else None)


def metered(request: web.Request) -> bool:
    """Whether this request's answers are counted: a person's always (the usage view lists people),
    anyone's under a token quota or before a sign-in; otherwise counting would cost a statement nobody reads."""
    if not request.get(SESSION):
        return False
    return PERSON in request or limits_of(request).tokens_per_day > 0 or _before_sign_in(request) is not None


def _before_sign_in(request: web.Request) -> int | None:
    """The messages this anonymous request's session may send before signing in (None: no such limit)."""
    config = request.app[CONFIG]
    return None if PERSON in request or not config.sign_in else config.messages_before_login


async def check_sign_in(request: web.Request) -> None:
    """Past ``messages_before_login`` messages, an anonymous session is asked to sign in (401)."""
    allowed = _before_sign_in(request)
    if allowed is None:
        return
    session = request.get(SESSION)
    sent = await request.app[STORE].messages_total(session) if session and allowed else 0
    if sent >= allowed:
        base = request.app[CONFIG].base_path
        what = "chats only with people signed in" if not allowed else f"answers {allowed} messages before you sign in"
        raise ApiError(401, f"Sign in to go on: this server {what}. Sign in at {base}/login")


async def check_tokens(request: web.Request) -> None:
    """Refuse an answer (429, with ``Retry-After``) once the session's tokens for today are spent."""
    limit = limits_of(request).tokens_per_day
    session = request.get(SESSION)
    if not limit or not session:
        return
    used = await request.app[STORE].tokens_today(session)
    if used >= limit:
        wait = seconds_to_midnight()
        raise ApiError(
            429,
            f"Today's tokens are spent: {used:,} generated of the {limit:,} this server allows per day "
            f"(tokens_per_day); more from 00:00 UTC, in {wait} s",
            headers={"Retry-After": str(wait)},
        )


async def count_accepted(request: web.Request) -> None:
    """A message accepted for an answer, counted at once when metered (the next one's check sees it)."""
    if metered(request):
        await request.app[STORE].record_usage(request[SESSION], 1, 0)


async def record_answer(app: web.Application, session_id: str, tokens: int) -> None:
    """An answer's tokens, once it is saved: its stream may end first, so a message sent at once after
    it may still find the day's tokens without them."""
    await app[STORE].record_usage(session_id, 0, tokens)


async def record_request(request: web.Request, tokens: int) -> None:
    """An answer of the APIs that keep no conversation (``/v1``, ``/generate``), counted when metered."""
    if metered(request):
        await request.app[STORE].record_usage(request[SESSION], 1, tokens)


MAX_DAYS = 366


async def people_usage(request: web.Request) -> tuple[int, str, list[PersonUsage]]:
    """For an admin (a login in ``admins``): the period asked for (``?days=N``, default 30: today and the
    N - 1 days before it), the day it starts, and every person's use in it."""
    person = request.get(PERSON)
    if person is None or person.login not in request.app[CONFIG].admins:
        raise ApiError(403, "The usage view is for the people this server names in admins, and this request is none")
    text = request.query.get("days", "30")
    if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
        raise ApiError(400, f"days is a whole number of days from 1 to {MAX_DAYS} (default 30), not {text[:20]!r}")
    days = int(text)
    since = day(days - 1)
    return days, since, await request.app[STORE].usage(since)
