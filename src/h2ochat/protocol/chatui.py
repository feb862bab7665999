"""The answer stream of current chat-ui: ``MessageUpdate`` lines, decoded and encoded once.

Since late 2023 chat-ui answers ``POST /conversation/<id>`` with newline-delimited
JSON (``application/jsonl``), one ``MessageUpdate`` per line, instead of
relaying TGI's event stream (docs/protocol.md section 11).  Its quirks, all
handled here so that neither the client nor the server meets them:

- every ``stream`` token is right-padded with NUL to 16 UTF-16 code units;
- ``{"type":"status","status":"keepAlive"}`` comes about every 100 ms;
- 4096 spaces follow the ``finalAnswer`` line without a newline, so they open
  the next line (JSON allows leading whitespace);
- ``status:error`` ends a failed run: it becomes a typed exception.

msgspec decodes each line straight into a tagged union of typed structs; an
update type this module does not know becomes :class:`UnknownUpdate` rather
than an error, since chat-ui adds types from time to time.  Pure code, no I/O.
"""

from __future__ import annotations

from typing import Any, Union, get_args

import msgspec

from h2ochat.protocol.errors import (
    H2oChatError,
    IncompleteStream,
    MalformedEvent,
    error_for_status_update,
)
from h2ochat.protocol.ndjson import DEFAULT_MAX_LINE_SIZE, LineDecoder
from h2ochat.protocol.nesting import MAX_JSON_DEPTH, NESTING_CHECK_SIZE, too_deep

__all__ = [
    "FINAL_ANSWER_SPACES",
    "KEEP_ALIVE",
    "ChatUIStreamDecoder",
    "ElicitationUpdate",
    "FileUpdate",
    "FinalAnswerUpdate",
    "MessageUpdate",
    "ReasoningUpdate",
    "RouterMetadataUpdate",
    "StatusUpdate",
    "StreamUpdate",
    "TitleUpdate",
    "ToolUpdate",
    "UnknownUpdate",
    "WebSearchUpdate",
    "encode_token",
    "encode_update",
    "parse_update",
    "stored_updates",
]


class _Update(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Fields left at their default are not written, as chat-ui leaves out what is undefined."""


class StatusUpdate(_Update, tag="status", gc=False):
    """``started`` opens a run, ``finished`` closes it; ``keepAlive`` and ``error`` never leave the decoder."""

    status: str
    message: str | None = None
    status_code: int | None = msgspec.field(default=None, name="statusCode")


class StreamUpdate(_Update, tag="stream", gc=False):
    """A piece of the answer, NUL padding removed. ``length`` is set in the stored form only."""

    token: str
    length: int | None = msgspec.field(default=None, name="len")


class TitleUpdate(_Update, tag="title", gc=False):
    """The conversation got a title; it may come at any point of the run."""

    title: str


class FinalAnswerUpdate(_Update, tag="finalAnswer", omit_defaults=False, gc=False):
    """The whole answer (what the server saves); take it rather than the joined tokens."""

    text: str
    interrupted: bool = False


class ReasoningUpdate(_Update, tag="reasoning", gc=False):
    """Thinking kept apart from the answer: a ``stream`` token or a ``status`` line of free text."""

    subtype: str
    token: str = ""
    status: str = ""


class RouterMetadataUpdate(_Update, tag="routerMetadata", gc=False):
    """Which model the router picked, or which inference provider answered."""

    route: str = ""
    model: str = ""
    provider: str | None = None


class FileUpdate(_Update, tag="file", gc=False):
    """A file a tool produced: ``GET /conversation/<id>/output/<sha>`` serves it."""

    name: str
    sha: str
    mime: str = ""


class ToolUpdate(_Update, tag="tool"):
    """An MCP tool call's ``call``, ``result``, ``error``, ``eta`` or ``progress``."""

    uuid: str
    subtype: str
    call: dict[str, Any] | None = None
    result: Any = None
    message: str | None = None
    eta: float | None = None
    progress: float | None = None
    total: float | None = None
    reasoning: str | None = None
    content: str | None = None
    original_id: str | None = msgspec.field(default=None, name="originalId")
    arguments_raw: str | None = msgspec.field(default=None, name="argumentsRaw")


class ElicitationUpdate(_Update, tag="elicitation"):
    """A tool asks the person to fill in a form (``request``), or the form was answered (``resolved``)."""

    subtype: str
    request: Any = None
    expires_at: str | None = msgspec.field(default=None, name="expiresAt")
    tool_uuid: str | None = msgspec.field(default=None, name="toolUuid")
    elicitation_id: str | None = msgspec.field(default=None, name="elicitationId")
    action: str | None = None
    resolution: Any = None
    content: Any = None


class WebSearchUpdate(_Update, tag="webSearch"):
    """Web search progress, from chat-ui versions before 2025-09-24 (still deployed here and there)."""

    subtype: str = ""
    message: str | None = None
    args: Any = None
    sources: Any = None


class UnknownUpdate(msgspec.Struct):
    """An update of a type this module does not know, kept whole: ``fields`` holds all but ``type``."""

    type: str
    fields: dict[str, Any] = msgspec.field(default_factory=dict)


_Known = Union[  # noqa: UP007 - msgspec needs the union as a runtime object on Python 3.10 too
    StatusUpdate,
    StreamUpdate,
    TitleUpdate,
    FinalAnswerUpdate,
    ReasoningUpdate,
    RouterMetadataUpdate,
    FileUpdate,
    ToolUpdate,
    ElicitationUpdate,
    WebSearchUpdate,
]
MessageUpdate = Union[_Known, UnknownUpdate]  # noqa: UP007
_KNOWN_TYPES = frozenset(cls.__struct_config__.tag for cls in get_args(_Known))

_decoder = msgspec.json.Decoder(_Known)
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

# chat-ui writes both with JSON.stringify: compact, keys in this order.
KEEP_ALIVE = b'{"type":"status","status":"keepAlive"}\n'
FINAL_ANSWER_SPACES = b" " * 4096
_KEEP_ALIVE_LINE = KEEP_ALIVE[:-1]
_PADDED_LENGTH = 16


class ChatUIStreamDecoder:
    """Bytes of a chat-ui answer stream in, :class:`MessageUpdate` objects out.

    ``decode(chunk)`` returns the updates ``chunk`` completes and ``flush()`` those
    of an unterminated last line, in the feeding style of the event-stream
    decoders.  Keep-alives and blank lines are skipped, NUL padding is removed
    from tokens, and ``status:error`` becomes its typed exception
    (:func:`~h2ochat.protocol.errors.error_for_status_update`; ``partial_text``
    is the caller's to fill in).  Errors keep their place in the stream: the
    updates before one are returned first and the error is raised by the next
    call, ``flush()`` included.
    """

    def __init__(self, max_line_size: int = DEFAULT_MAX_LINE_SIZE) -> None:
        self._lines = LineDecoder(max_line_size)
        self._held = self._lines.held  # the same bytearray, changed in place by the line decoder
        self._deferred: H2oChatError | None = None
        # Lines shorter than this need neither the nesting check (nesting.py) nor the size check.
        self._fast_size = min(NESTING_CHECK_SIZE, max_line_size + 1)

    @property
    def has_pending_input(self) -> bool:
        """Whether part of a line is held (``flush`` decodes it)."""
        return self._lines.has_pending_input

    def decode(self, chunk: bytes) -> list[MessageUpdate]:
        # The client's hot path: a read that holds one whole line, usually a token. msgspec
        # decodes it as it came, and only what needs more than that takes the general path.
        if self._deferred is None and not self._held and 0 <= chunk.find(10) == len(chunk) - 1 < self._fast_size:
            # One whole line (its "\n" is JSON whitespace) and nothing held: the line is the chunk.
            if chunk == KEEP_ALIVE:
                return []
            try:
                update = _decoder.decode(chunk)
            except msgspec.DecodeError:
                return self._decode_lines(chunk)
            if type(update) is StreamUpdate:
                update.token = update.token.replace("\0", "")
                return [update]
            if type(update) is ReasoningUpdate:  # chat-ui pads answer tokens only; a reader strips both alike
                update.token = update.token.replace("\0", "")
                return [update]
            if type(update) is not StatusUpdate:
                return [update]
        return self._decode_lines(chunk)

    def _decode_lines(self, chunk: bytes) -> list[MessageUpdate]:
        """Any read: every update of the lines it completes, in order, errors in their place."""
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        framing = self._lines
        updates: list[MessageUpdate] = []
        append = updates.append
        limit = framing.max_line_size
        for line in framing.lines(chunk):
            if line == _KEEP_ALIVE_LINE:  # the commonest line after tokens: no need to decode it
                continue
            size = len(line)
            if size > limit:
                return self._fail(updates, framing.too_large(size))
            try:
                # A short line cannot nest too deeply (nesting.py): the check costs one comparison here.
                update: MessageUpdate | None = (
                    None if size > NESTING_CHECK_SIZE and too_deep(line) else _decoder.decode(line)
                )
            except msgspec.DecodeError:
                update = None  # blank, invalid JSON or UTF-8, an unknown type: the slow path says which
            if update is None:
                if not line.strip():
                    continue
                try:
                    update = parse_update(line)
                except H2oChatError as exc:
                    return self._fail(updates, exc)
            if type(update) is StreamUpdate or type(update) is ReasoningUpdate:  # `type() is`: no subclasses
                update.token = update.token.replace("\0", "")
            elif type(update) is StatusUpdate:
                status = update.status
                if status == "keepAlive":
                    continue
                if status == "error":
                    return self._fail(updates, error_for_status_update(update.message, update.status_code))
            append(update)
        if framing.overflow:  # the unfinished line after these grew past the limit
            return self._fail(updates, framing.too_large(framing.overflow))
        return updates

    def flush(self) -> list[MessageUpdate]:
        """End of stream: the updates of a last line that lacks its newline.

        A last line that is not whole JSON means the connection was cut inside it:
        :class:`~h2ochat.protocol.errors.IncompleteStream`.  An error left by the
        last :meth:`decode` is raised here if no later call raised it.
        """
        if self._deferred is not None:
            error, self._deferred = self._deferred, None
            raise error
        rest = self._lines.flush()
        if not rest.strip():
            return []
        try:
            if not too_deep(rest):  # too deep for msgspec's recursion: decode() says so below
                _any_decoder.decode(rest)
        except msgspec.DecodeError:
            raise IncompleteStream(
                f"the answer stream ended inside a line ({len(rest)} bytes without their newline): "
                f"{rest[:120]!r}; the connection was probably cut, try again"
            ) from None
        return self.decode(rest + b"\n")

    def _fail(self, updates: list[MessageUpdate], error: H2oChatError) -> list[MessageUpdate]:
        if not updates:
            raise error
        self._deferred = error
        return updates


def parse_update(line: bytes | str) -> MessageUpdate:
    """Decode one line the fast path refused; a line that is no update raises :class:`MalformedEvent`.

    Invalid UTF-8 becomes U+FFFD, as in the event stream; an unknown ``type``
    becomes :class:`UnknownUpdate`.  NUL padding and ``status`` values are the
    decoder's business, not this function's.
    """
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    if too_deep(text):
        raise MalformedEvent(f"the server sent an update nested more than {MAX_JSON_DEPTH} levels deep: {text[:120]!r}")
    try:
        return _decoder.decode(text)
    except msgspec.ValidationError as exc:
        invalid = exc
    except msgspec.DecodeError as exc:
        raise _malformed(f"a line that is not JSON ({exc})", text) from None
    return _unknown(_any_decoder.decode(text), invalid, text)


def stored_updates(items: list[Any]) -> list[MessageUpdate]:
    """The ``updates`` of a stored message (parsed JSON, as :func:`superjson.decode` gives them), typed.

    Stored tokens are empty with their ``length``; unknown types are kept, a
    wrong shape raises :class:`MalformedEvent`, as in the stream.
    """
    updates: list[MessageUpdate] = []
    for item in items:
        try:
            updates.append(msgspec.convert(item, _Known))
        except msgspec.ValidationError as exc:
            updates.append(_unknown(item, exc, repr(item)))
    return updates


def _unknown(payload: Any, invalid: msgspec.ValidationError, text: str) -> UnknownUpdate:
    """An object of a type this module does not know; anything else that failed validation is malformed."""
    if not isinstance(payload, dict):
        raise _malformed(f"a JSON {type(payload).__name__} where an update object belongs", text)
    payload = dict(payload)
    kind = payload.pop("type", None)
    if not isinstance(kind, str):
        raise _malformed("an update without a string 'type'", text)
    if kind in _KNOWN_TYPES:
        raise _malformed(f"a {kind!r} update of the wrong shape ({invalid})", text)
    return UnknownUpdate(kind, payload)


def _malformed(what: str, text: str) -> MalformedEvent:
    return MalformedEvent(
        f"the server sent {what}: {text[:120]!r}; is this a chat-ui server of today? "
        "(protocol='2023' speaks the older one)"
    )


def encode_update(update: MessageUpdate) -> bytes:
    """One update as a line of the stream, tokens unpadded (the stored form; :func:`encode_token` pads)."""
    if isinstance(update, UnknownUpdate):
        fields = {key: value for key, value in update.fields.items() if key != "type"}
        return _encoder.encode({"type": update.type, **fields}) + b"\n"
    return _encoder.encode(update) + b"\n"


def encode_token(token: str, *, pad: bool = True) -> bytes:
    """A ``stream`` line as chat-ui writes it: the token padded with NUL to 16 UTF-16 code units.

    NUL is padding on this wire, so a NUL inside ``token`` does not reach the reader.
    """
    if pad:
        # JavaScript's padEnd counts UTF-16 code units: a character beyond the BMP counts twice.
        units = len(token) if token.isascii() else len(token.encode("utf-16-le")) // 2
        if units < _PADDED_LENGTH:
            token += "\0" * (_PADDED_LENGTH - units)
    return b'{"type":"stream","token":' + _encoder.encode(token) + b"}\n"
