"""Every error h2ochat raises, and the mapping from wire answers to them.

    H2oChatError                  base of everything below
    ├── ProtocolError             the server answered something the protocol does not allow
    │   ├── EventTooLarge         an event grew past the decoder's size limit
    │   ├── MalformedEvent        an event's data is not the JSON the protocol defines
    │   └── IncompleteStream      the stream ended before its final event
    ├── TransportError            the network failed
    │   ├── ConnectError          could not open a connection (refused, DNS, TLS)
    │   │   └── ProxyError        the proxy refused us or wants credentials
    │   └── ReadError             the connection broke while a response was read
    ├── TimeoutException          a time limit passed (also a built-in TimeoutError)
    │   ├── ConnectTimeout        opening the connection
    │   ├── FirstTokenTimeout     waiting for the first token
    │   └── ReadTimeout           waiting for the next event or a response body
    ├── HTTPStatusError           the server answered with an error status
    │   ├── RateLimited           429; ``retry_after`` holds the server's hint
    │   ├── ConversationNotFound  404 for a conversation (missing, or another session's)
    │   └── ServerError           5xx
    └── GenerationError           an error event inside the stream (``error_type``; chat-ui's ``statusCode``)
        ├── InputValidationError  ``validation``
        ├── GenerationFailed      ``generation``
        ├── ModelOverloaded       ``overloaded``
        └── IncompleteGeneration  ``incomplete_generation``

Errors raised while a stream is read carry ``partial_text``: what had arrived.
Two warnings: ``DeleteFailedWarning``, when a complete answer's conversation
could not be deleted (the answer is kept), and ``ParametersIgnoredWarning``, when
generation parameters go to a server of today's chat-ui, whose protocol has no
place for them.
This module is pure: it formats messages and picks classes, it does no I/O.
"""

from __future__ import annotations

import email.utils
import html
import json
import re
import time

from h2ochat.protocol.nesting import too_deep

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "ConversationNotFound",
    "DeleteFailedWarning",
    "EventTooLarge",
    "FirstTokenTimeout",
    "GenerationError",
    "GenerationFailed",
    "H2oChatError",
    "HTTPStatusError",
    "IncompleteGeneration",
    "IncompleteStream",
    "InputValidationError",
    "MalformedEvent",
    "ModelOverloaded",
    "ParametersIgnoredWarning",
    "ProtocolError",
    "ProxyError",
    "RateLimited",
    "ReadError",
    "ReadTimeout",
    "ServerError",
    "TimeoutException",
    "TransportError",
    "ERROR_TYPES",
    "body_excerpt",
    "error_for_event",
    "error_for_status_update",
    "error_for_status",
    "parse_retry_after",
]


class H2oChatError(Exception):
    """Base class of every error h2ochat raises."""

    step: str | None = None
    url: str | None = None
    partial_text: str = ""


class DeleteFailedWarning(UserWarning):
    """A conversation could not be deleted after its answer was complete."""


class ParametersIgnoredWarning(UserWarning):
    """Generation parameters were passed for a server of today's chat-ui, which takes none."""


class ProtocolError(H2oChatError):
    """The server answered something the protocol does not allow."""


class EventTooLarge(ProtocolError):
    """An event grew past the decoder's size limit."""


class MalformedEvent(ProtocolError):
    """An event's data is not the JSON the protocol defines."""


class IncompleteStream(ProtocolError):
    """The event stream ended before the event that carries ``generated_text``."""


class TransportError(H2oChatError):
    """The network failed."""


class ConnectError(TransportError):
    """A connection could not be opened (refused, unknown host, TLS failure)."""


class ProxyError(ConnectError):
    """The proxy could not be reached, refused the connection or wants credentials."""


class ReadError(TransportError):
    """The connection broke while a response was being read."""


class TimeoutException(H2oChatError, TimeoutError):
    """A time limit passed."""


class ConnectTimeout(TimeoutException):
    """Opening the connection took longer than the connect limit."""


class FirstTokenTimeout(TimeoutException):
    """The first token took longer than the first-token limit."""


class ReadTimeout(TimeoutException):
    """The next event, or a response body, took longer than the read limit."""


class HTTPStatusError(H2oChatError):
    """The server answered with an error status."""

    def __init__(self, message: str, *, status: int, step: str, url: str, body: str) -> None:
        super().__init__(message)
        self.status = status
        self.step = step
        self.url = url
        self.body = body


class RateLimited(HTTPStatusError):
    """429 Too Many Requests; ``retry_after`` is the server's hint in seconds, if any."""

    retry_after: float | None = None


class ConversationNotFound(HTTPStatusError):
    """404 for a conversation: it is gone, or belongs to another session."""


class ServerError(HTTPStatusError):
    """The server failed (5xx)."""


class GenerationError(H2oChatError):
    """The server reported an error inside the event stream."""

    error_type = "generation"
    # The HTTP status current chat-ui attaches to a ``status:error`` update (its upstream's), if any.
    status_code: int | None = None

    def __init__(self, message: str, *, partial_text: str = "") -> None:
        super().__init__(message)
        self.partial_text = partial_text


class InputValidationError(GenerationError):
    """The model refused the input or the parameters (``validation``)."""

    error_type = "validation"


class GenerationFailed(GenerationError):
    """The model failed while generating (``generation``)."""

    error_type = "generation"


class ModelOverloaded(GenerationError):
    """The model is overloaded; try again later (``overloaded``)."""

    error_type = "overloaded"


class IncompleteGeneration(GenerationError):
    """The generation stopped before it was complete (``incomplete_generation``)."""

    error_type = "incomplete_generation"


ERROR_TYPES: dict[str, type[GenerationError]] = {
    cls.error_type: cls for cls in (InputValidationError, GenerationFailed, ModelOverloaded, IncompleteGeneration)
}


def error_for_event(error: str, error_type: str | None, partial_text: str = "") -> GenerationError:
    """The exception for an in-stream ``{"error", "error_type"}`` event."""
    cls = ERROR_TYPES.get(error_type or "", GenerationError)
    kind = f" ({error_type})" if error_type else ""
    return cls(f"the server reported an error{kind}: {error}", partial_text=partial_text)


def error_for_status_update(message: str | None, status_code: int | None, partial_text: str = "") -> GenerationError:
    """The exception for current chat-ui's in-stream ``{"type":"status","status":"error"}`` update.

    chat-ui passes on its upstream's status code: the class follows it as the TGI
    ``error_type`` would (a refused input, a busy model, a failure), and the
    message says what to do where the code tells it.
    """
    cls = _UPDATE_STATUS_CLASSES.get(status_code or 0, GenerationError)
    if cls is GenerationError and (status_code is None or status_code >= 500):
        cls = GenerationFailed
    code = f" (status {status_code})" if status_code is not None else ""
    text = message if message else "(no message)"
    exc = cls(
        f"the server reported an error{code}: {text}{_UPDATE_HINTS.get(status_code or 0, '')}",
        partial_text=partial_text,
    )
    exc.status_code = status_code
    return exc


_UPDATE_STATUS_CLASSES: dict[int, type[GenerationError]] = {
    400: InputValidationError,
    413: InputValidationError,
    422: InputValidationError,
    429: ModelOverloaded,
    503: ModelOverloaded,
}
_UPDATE_HINTS = {
    401: " (log in again: pass fresh cookies=, on HuggingChat both hf-chat and token)",
    402: " (the account has no credits left for this model: add some or pick another model)",
    429: " (the model is busy: wait and try again)",
    503: " (the model is busy or starting: wait and try again)",
}


_EXCERPT = 200
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def body_excerpt(body: bytes, content_type: str = "") -> str:
    """A short, single-line summary of an error body, whatever its format."""
    if not body.strip():
        return "(empty body)"
    if ("json" in content_type or body.lstrip()[:1] in (b"{", b"[")) and not too_deep(body):
        try:
            payload = json.loads(body)
        except ValueError:
            pass
        else:
            if isinstance(payload, dict):
                for key in ("message", "error", "detail"):
                    if isinstance(payload.get(key), str):
                        return _shorten(payload[key])
                    if isinstance(payload.get(key), dict) and isinstance(payload[key].get("message"), str):
                        return _shorten(payload[key]["message"])
            return _shorten(json.dumps(payload))
    if "html" in content_type or body.lstrip()[:1] == b"<":
        title = _TITLE.search(body)
        text = title.group(1) if title else body
        return _shorten(html.unescape(_TAGS.sub(" ", text.decode("utf-8", "replace"))))
    return _shorten(body.decode("utf-8", "replace"))


def _shorten(text: str) -> str:
    text = _SPACE.sub(" ", text).strip()
    if not text:  # only whitespace, to str (b"\x1c" and U+2028 are, though bytes.strip() keeps them)
        return "(empty body)"
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit() alone accepts "²", which float() refuses
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


_STATUS_CLASSES: dict[int, type[HTTPStatusError]] = {429: RateLimited, 404: ConversationNotFound}


def error_for_status(
    step: str,
    status: int,
    url: str,
    body: bytes,
    content_type: str = "",
    retry_after: str | None = None,
) -> HTTPStatusError:
    """The exception for an HTTP error answer at one of the client's steps."""
    excerpt = body_excerpt(body, content_type)
    cls = _STATUS_CLASSES.get(status, ServerError if status >= 500 else HTTPStatusError)
    if cls is ConversationNotFound and step not in ("message", "delete"):
        cls = HTTPStatusError
    hint = _hint(status, body, excerpt)
    message = f"{step} step failed: HTTP {status} from {url}: {excerpt}{hint}"
    exc = cls(message, status=status, step=step, url=url, body=excerpt)
    if isinstance(exc, RateLimited):
        exc.retry_after = parse_retry_after(retry_after)
    return exc


def _hint(status: int, body: bytes, excerpt: str) -> str:
    """What to do, as far as the status and body tell it."""
    if status == 500 and excerpt == "An error occurred":
        # Current chat-ui's answer to any exception in a handler: the cause stays in its log.
        error_id = _error_id(body)
        named = f" (errorId {error_id})" if error_id else ""
        return (
            f"{named}: the server failed on this request and keeps the cause in its log; with chat-ui this is "
            "most often a request of the other protocol generation (try protocol='2023' or protocol='current') "
            "or a parent message id the conversation does not hold"
        )
    if status == 401 and "logged in" in excerpt:
        return (
            " (this server lets only logged-in people chat: pass cookies= with the cookies of a browser "
            "that is logged in; HuggingChat needs both hf-chat and token, see the README)"
        )
    return _HINTS.get(status, "")


def _error_id(body: bytes) -> str | None:
    if too_deep(body):
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    error_id = payload.get("errorId") if isinstance(payload, dict) else None
    return error_id if isinstance(error_id, str) else None


_HINTS = {
    401: " (the server wants credentials: pass headers= or cookies=, such as a logged-in session's cookie)",
    403: (
        " (the server refused the request: check the url, which must be the server's public address: "
        "chat-ui takes form posts only from its own pages, by their Origin today and their Referer in 2023, "
        "and h2ochat sends both from the url; or the conversation belongs to another session)"
    ),
    405: " (a welcome gate may be closed: the settings step must succeed first)",
    429: " (rate limited: wait and try again)",
}
