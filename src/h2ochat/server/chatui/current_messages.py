"""Posting a message as today's chat-ui does (``multipart/form-data`` with a ``data`` part), answered
with the ``application/jsonl`` stream of ``MessageUpdate``s (docs/protocol.md, "Current generation").

The ``data`` part's ``id`` names a place in the tree (CHATUI-CURRENT.md section 6):

- no ``is_retry``: the **parent** of the new question, the system root or an answer;
- ``is_retry`` with a **user** message and ``inputs``: an edit, a new question beside that one;
- ``is_retry`` with an **assistant** message: a new answer beside that one (``inputs`` ignored).

The tree, the prompt, the limits and the save are those of the 2023 handler (``answering``).
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from h2ochat.protocol.chatui import KEEP_ALIVE
from h2ochat.protocol.chatui_bodies import MessagePost, decode_message_post
from h2ochat.protocol.tree import Tree
from h2ochat.protocol.websearch import SearchEvent, current_update
from h2ochat.server.chatui.answering import branch, count_message, fit, run_for, saved_parameters, stream_and_save
from h2ochat.server.chatui.current_stream import HEADERS, ChatUIUpdates, first_words
from h2ochat.server.chatui.routes import owned_tree, runtime_of
from h2ochat.server.chatui.web_search import search_and_store
from h2ochat.server.edge.http import CONFIG, SESSION, STORE, ApiError
from h2ochat.server.storage import Conversation, MessageRow
from h2ochat.server.websearch.search import with_context

__all__ = ["post_current"]

NEW_CHAT = "New Chat"  # the title storage gives a new conversation
_EXAMPLE = '{"inputs": "<text>", "id": "<parent message id>"}'


async def post_current(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    conversation, rows = await owned_tree(request)
    post = await _read_post(request)
    runtime = runtime_of(request, conversation)
    tree = Tree(rows.values())
    parent_id, user = _place(tree, rows, post)
    if user is not None and len(user[1]) > config.max_input_chars:
        raise ApiError(
            400, f"inputs is {len(user[1])} characters; this server accepts at most {config.max_input_chars}"
        )
    parameters = saved_parameters(request, runtime, conversation)
    dialect = ChatUIUpdates(generation_id=post.generation_id)
    await count_message(request, runtime, dialect)
    system, messages = branch(rows, tree.path(parent_id))
    if user is not None:
        messages.append({"role": "user", "content": user[1]})
    search_id = await _web_search(request, conversation, post, messages, dialect) if post.web_search else None
    fitted = await fit(runtime, messages, parameters, system=system)
    answer_id = str(uuid.uuid4())
    async with run_for(request, conversation, answer_id, "current", post.generation_id) as run_id:
        await request.app[STORE].begin_exchange(
            conversation.id, parent_id, user, answer_id, left_out=fitted.left_out, limit=config.max_messages
        )
    if search_id is not None:
        await request.app[STORE].attach_web_search(search_id, answer_id)
    dialect.title = await _title(request, conversation, messages)
    return await stream_and_save(
        request,
        runtime,
        conversation,
        fitted,
        answer_id,
        dialect,
        run_id=run_id,
        generation="current",
        headers=HEADERS,
        keep_alive=KEEP_ALIVE,
        saved_text=dialect.saved_text,
    )


async def _web_search(
    request: web.Request, conversation: Conversation, post: MessagePost, messages: list[dict[str, str]], dialect: Any
) -> str | None:
    """``web_search: true``: the search runs before the answer, its ``webSearch`` updates lead the stream
    (sent together when the answer starts), and the question the model reads carries the passages."""
    if not request.app[CONFIG].web_search.enabled:
        off = SearchEvent("error", "Web search is off on this server; answering without it")
        dialect.preamble = current_update(off) + current_update(None)
        return None
    lines: list[bytes] = []

    async def emit(event: SearchEvent) -> None:
        lines.append(current_update(event))

    search_id, found = await search_and_store(request, conversation, messages[-1]["content"], emit)
    dialect.preamble = b"".join(lines) + current_update(None)
    messages[-1] = {"role": "user", "content": with_context(messages[-1]["content"], found.context)}
    return search_id


async def _read_post(request: web.Request) -> MessagePost:
    """The ``data`` part, decoded; files are refused (the models here read text only)."""
    try:
        form = await request.post()
    except web.HTTPException:
        raise  # too large: aiohttp's own refusal, worded by the app
    except Exception as exc:  # no boundary, a cut body, bad UTF-8: the client's multipart
        raise ApiError(400, f"The multipart body could not be read ({type(exc).__name__}: {exc})") from None
    data: Any = form.get("data")
    if isinstance(data, web.FileField):  # sent with a filename: still the data part
        data = data.file.read()
    if data is None:
        raise ApiError(400, f"Invalid request: the multipart body has no 'data' part; send one holding {_EXAMPLE}")
    for part in form.getall("files", []):
        if part.file.read(1) if isinstance(part, web.FileField) else part:  # empty parts are skipped, as chat-ui does
            raise ApiError(415, "The models of this server read text only: send the message without files")
    try:
        post = decode_message_post(data)
    except ValueError as exc:
        raise ApiError(400, f"Invalid request: {exc}") from None
    if post.id is None:
        raise ApiError(400, f"Invalid request: id is missing; send {_EXAMPLE} (the conversation's rootMessageId first)")
    return post


def _place(tree: Tree, rows: dict[str, MessageRow], post: MessagePost) -> tuple[str, tuple[str, str] | None]:
    """Where the exchange goes: its parent, and the user message to add (None to answer again)."""
    assert post.id is not None
    named = rows.get(post.id)
    if named is None:
        raise ApiError(404, f"Message not found: {post.id} is not a message of this conversation")
    if not post.is_retry:
        if named.role == "user":
            raise ApiError(400, f"id {post.id} is a question; a new message goes under the system root or an answer")
        return named.id, (str(uuid.uuid4()), _inputs(post))
    if named.role == "assistant":
        assert named.parent_id is not None  # an answer is never the root
        return named.parent_id, None  # regenerate: a new answer beside it
    if named.role == "user":
        assert named.parent_id is not None
        return named.parent_id, (str(uuid.uuid4()), _inputs(post))  # edit: a new question beside it
    raise ApiError(400, "is_retry names the system root, which cannot be retried; name a question or an answer")


def _inputs(post: MessagePost) -> str:
    if post.inputs is None or not post.inputs.strip():
        raise ApiError(400, "inputs is empty: send the user's message in inputs")
    return post.inputs


async def _title(request: web.Request, conversation: Conversation, messages: list[dict[str, str]]) -> str | None:
    """The title a conversation still called "New Chat" gets from its first question, as chat-ui
    names it without a summarizing model; None when it has one (a title set meanwhile stays)."""
    if conversation.title != NEW_CHAT:
        return None
    question = next((m["content"] for m in messages if m["role"] == "user"), "")
    title = first_words(question)
    if title == NEW_CHAT:
        return None
    store = request.app[STORE]
    renamed = await store.rename_conversation(conversation.id, request[SESSION], title, only_if=NEW_CHAT)
    return title if renamed else None
