"""The h2oGPT chat protocol as pure code: wire shapes, event streams, errors. No I/O."""

from __future__ import annotations

from h2ochat.protocol.chatui import ChatUIStreamDecoder, MessageUpdate, encode_token, encode_update
from h2ochat.protocol.errors import *  # noqa: F403
from h2ochat.protocol.errors import __all__ as _errors
from h2ochat.protocol.nesting import MAX_JSON_DEPTH, too_deep
from h2ochat.protocol.prompt import Message, Messages, check_messages, format_prompt
from h2ochat.protocol.sse import EventStreamDecoder, ServerSentEvent, encode_comment, encode_event
from h2ochat.protocol.tgi import (
    DEFAULT_PARAMETERS,
    Details,
    StreamEvent,
    TGIStreamDecoder,
    Token,
    encode_error_event,
    encode_stream_event,
)

__all__ = [
    *_errors,
    "DEFAULT_PARAMETERS",
    "ChatUIStreamDecoder",
    "MAX_JSON_DEPTH",
    "Details",
    "EventStreamDecoder",
    "Message",
    "MessageUpdate",
    "Messages",
    "ServerSentEvent",
    "StreamEvent",
    "TGIStreamDecoder",
    "Token",
    "check_messages",
    "encode_comment",
    "encode_error_event",
    "encode_event",
    "encode_stream_event",
    "encode_token",
    "encode_update",
    "format_prompt",
    "too_deep",
]
