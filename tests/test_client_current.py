"""The client against today's chat-ui: the recorded exchange played back over loopback HTTP (tests/chatui_replay.py).

Detection, the whole call (create, multipart message, the NDJSON answer with its
padding, keep-alives and 4096 spaces, delete), stop at the seen point, typed
errors in every body shape chat-ui uses, the cookies a caller passes, and the
warning for generation parameters.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from click.testing import CliRunner

from h2ochat import AsyncClient
from h2ochat.cli import cli
from h2ochat.protocol.chatui import encode_token
from h2ochat.protocol.errors import (
    ConversationNotFound,
    GenerationError,
    GenerationFailed,
    HTTPStatusError,
    ModelOverloaded,
    ParametersIgnoredWarning,
    ServerError,
)
from h2ochat.providers import H2o, H2oSession
from tests.chatui import ChatUIDouble
from tests.chatui_replay import ANSWER, ANSWER_ID, CONVERSATION, MODEL, ROOT, ChatUIReplay, recorded_data_part

USER = [{"role": "user", "content": "What is the capital of France?"}]
Serve = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def replay(aiohttp_server: Serve) -> AsyncIterator[tuple[ChatUIReplay, str]]:
    double = ChatUIReplay()
    server = await aiohttp_server(double.app())
    yield double, str(server.make_url("")).rstrip("/")


async def test_detects_today_s_chat_ui_and_chats_with_the_recording(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    async with H2oSession(url, prefetch=False) as session:
        result = session.stream(USER, MODEL)
        tokens = [token async for token in result]
        assert await session.generation() == "current"
    # The recorded tokens, NUL padding gone; finalAnswer's text is the answer.
    assert tokens == ["The", " capital", " of", " France", " is", " Paris", "."]
    assert "".join(tokens) == ANSWER == result.info.generated_text
    assert result.info.title == "What is the capital of"
    assert result.info.finish_reason == "stop" and result.info.done
    assert result.conversation_id == CONVERSATION
    assert double.paths() == [
        ("GET", "/api/v2/models"),
        ("POST", "/conversation"),
        ("POST", f"/conversation/{CONVERSATION}"),
        ("DELETE", f"/api/v2/conversations/{CONVERSATION}"),
    ]


async def test_the_message_is_the_multipart_data_part_chat_ui_s_client_sends(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    async with H2oSession(url, prefetch=False) as session:
        await session.ask(USER, MODEL)
    create, message = double.requests[1], double.requests[2]
    assert json.loads(create.body) == {"model": MODEL}
    assert create.headers["Origin"] == url
    assert message.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert message.headers["Origin"] == url  # the rule that replaced 2023's Referer
    assert f"hf-chat={double.cookie}" in message.headers["Cookie"]  # kept from the create answer
    data = json.loads(message.form["data"])
    recorded = recorded_data_part()
    assert data["inputs"] == recorded["inputs"] and data["id"] == recorded["id"] == ROOT  # the root from the string
    assert str(uuid.UUID(data["generationId"])) == data["generationId"]
    assert data.get("is_retry", False) is False


async def test_forced_generation_asks_nothing_first(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    async with H2oSession(url, prefetch=False, protocol="current") as session:
        assert await session.ask(USER, MODEL) == ANSWER
    assert double.paths()[0] == ("POST", "/conversation")


async def test_forced_2023_speaks_2023_without_asking(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    async with H2oSession(url, prefetch=False, protocol="2023") as session:
        assert await session.ask(USER) == "Hello world"
    assert double.requests[0][1] == "/settings"


async def test_a_chat_ui_of_2023_is_detected_by_its_404(chatui: tuple[ChatUIDouble, str]) -> None:
    _, url = chatui
    async with H2oSession(url, prefetch=False) as session:
        assert await session.ask(USER) == "Hello world"
        assert await session.generation() == "2023"


async def test_detection_is_asked_once_per_session(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    async with H2oSession(url, prefetch=False) as session:
        for _ in range(2):
            double.answered = False
            assert await session.ask(USER, MODEL) == ANSWER
        assert await session.models() == [
            {"id": MODEL, "name": MODEL, "displayName": MODEL, "multimodal": False, "unlisted": False}
        ]
    assert [path for _, path in double.paths()].count("/api/v2/models") == 1


def test_an_unknown_protocol_is_refused_where_it_is_given() -> None:
    with pytest.raises(ValueError, match="protocol must be '2023', 'current' or 'auto'"):
        H2oSession("http://127.0.0.1:9", protocol="2024")


async def test_a_refused_probe_says_how_to_skip_it(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    double.fail("probe", 401, "You have to be logged in.", "text/plain")
    async with H2oSession(url, prefetch=False, max_retries=0) as session:
        with pytest.raises(HTTPStatusError) as caught:
            await session.ask(USER, MODEL)
        # Not remembered: the next call asks again, and this time it is answered.
        assert await session.ask(USER, MODEL) == ANSWER
    message = str(caught.value)
    assert "HTTP 401" in message and "You have to be logged in." in message
    assert "hf-chat and token" in message and "protocol='current'" in message


async def test_leaving_early_stops_at_the_seen_point_then_deletes(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    async with H2oSession(url, prefetch=False) as session:
        result = session.stream(USER, MODEL)
        seen = [await result.__anext__(), await result.__anext__()]
        await result.aclose()
    assert seen == ["The", " capital"]
    stop = next(s for s in double.requests if s.path.endswith("/stop-generating"))
    message = next(s for s in double.requests if s.path == f"/conversation/{CONVERSATION}")
    body = json.loads(stop.body)
    assert body == {"generationId": json.loads(message.form["data"])["generationId"], "seenContentLength": 11}
    assert double.paths()[-2:] == [
        ("POST", f"/conversation/{CONVERSATION}/stop-generating"),
        ("DELETE", f"/api/v2/conversations/{CONVERSATION}"),
    ]


async def test_the_stop_point_counts_as_javascript_does(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    double.script = [b'{"type":"status","status":"started"}\n', encode_token("😀é"), encode_token("x")]
    async with H2oSession(url, prefetch=False) as session:
        result = session.stream(USER, MODEL)
        assert await result.__anext__() == "😀é"
        await result.aclose()
    stop = next(s for s in double.requests if s.path.endswith("/stop-generating"))
    assert json.loads(stop.body)["seenContentLength"] == 3  # a surrogate pair and one BMP character


async def test_a_complete_answer_sends_no_stop(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    async with H2oSession(url, prefetch=False) as session:
        await session.ask(USER, MODEL)
    assert not any(s.path.endswith("/stop-generating") for s in double.requests)


@pytest.mark.parametrize(
    ("update", "kind", "words"),
    [
        ({"status": "error", "message": "Model is overloaded", "statusCode": 503}, ModelOverloaded, "wait"),
        (
            {"status": "error", "message": "No output was generated. Something went wrong."},
            GenerationFailed,
            "No output",
        ),
        ({"status": "error", "message": "Subscribe", "statusCode": 402}, GenerationError, "credits"),
    ],
)
async def test_an_error_update_is_typed_with_the_text_so_far(
    replay: tuple[ChatUIReplay, str], update: dict[str, object], kind: type[GenerationError], words: str
) -> None:
    double, url = replay
    error_line = json.dumps({"type": "status", **update}).encode() + b"\n"
    double.script = [b'{"type":"status","status":"started"}\n', encode_token("Par"), error_line]
    async with H2oSession(url, prefetch=False) as session:
        with pytest.raises(kind) as caught:
            await session.ask(USER, MODEL)
    assert type(caught.value) is kind
    assert caught.value.partial_text == "Par" and words in str(caught.value)


async def test_reasoning_is_kept_apart_from_the_answer(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    double.script = [
        b'{"type":"status","status":"started"}\n',
        b'{"type":"reasoning","subtype":"stream","token":"Hmm, "}\n',
        b'{"type":"reasoning","subtype":"status","status":"Summarizing reasoning"}\n',
        b'{"type":"reasoning","subtype":"stream","token":"France."}\n',
        encode_token("Paris"),
        b'{"type":"finalAnswer","text":"Paris","interrupted":true}\n',
    ]
    async with H2oSession(url, prefetch=False) as session:
        result = session.stream(USER, MODEL)
        assert await result.text() == "Paris"
    assert result.info.reasoning == "Hmm, France." and result.info.finish_reason == "length"


async def test_a_final_answer_without_tokens_is_the_answer(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    double.script = [b'{"type":"status","status":"started"}\n', b'{"type":"finalAnswer","text":"Paris."}\n']
    async with H2oSession(url, prefetch=False) as session:
        assert await session.ask(USER, MODEL) == "Paris."


@pytest.mark.parametrize(
    ("step", "status", "body", "content_type", "kind", "words"),
    [
        ("create", 400, '{"message": "Invalid model"}', "application/json", HTTPStatusError, "Invalid model"),
        ("create", 403, '{"error": "Invalid referer for POST request"}', "application/json", HTTPStatusError, "Origin"),
        ("create", 401, "You have to be logged in.", "text/plain", HTTPStatusError, "hf-chat and token"),
        (
            "message",
            500,
            '{"message": "An error occurred", "errorId": "5d1c"}',
            "application/json",
            ServerError,
            "errorId 5d1c",
        ),
        (
            "message",
            404,
            '{"message": "Conversation not found"}',
            "application/json",
            ConversationNotFound,
            "not found",
        ),
        (
            "message",
            429,
            '{"message": "You are sending too many messages."}',
            "application/json",
            HTTPStatusError,
            "wait",
        ),
    ],
)
async def test_error_answers_in_every_shape_are_typed_and_say_what_to_do(
    replay: tuple[ChatUIReplay, str],
    step: str,
    status: int,
    body: str,
    content_type: str,
    kind: type[HTTPStatusError],
    words: str,
) -> None:
    double, url = replay
    double.fail(step, status, body, content_type)
    async with H2oSession(url, prefetch=False, max_retries=0) as session:
        with pytest.raises(kind) as caught:
            await session.ask(USER, MODEL)
    error = caught.value
    assert error.status == status and words in str(error)
    shown = json.loads(body).get("message") or json.loads(body).get("error") if body.startswith("{") else body
    assert shown in str(error)  # the server's own words, whichever key holds them


async def test_the_cookies_passed_are_sent_as_given(aiohttp_server: Serve) -> None:
    """HuggingChat: both hf-chat and token, under the /chat base path; Origin is the host, not the path."""
    double = ChatUIReplay()
    double.cookie = "a-logged-in-session"
    outer = web.Application()
    outer.add_subapp("/chat", double.app())
    server = await aiohttp_server(outer)
    host = str(server.make_url("")).rstrip("/")
    cookies = {"hf-chat": "a-logged-in-session", "token": "hf_secret"}
    async with H2oSession(host + "/chat", prefetch=False, cookies=cookies) as session:
        assert await session.ask(USER, MODEL) == ANSWER
    for seen in double.requests:
        sent = dict(part.strip().split("=", 1) for part in seen.headers["Cookie"].split(";"))
        assert sent == cookies, seen.path
    assert {seen.headers["Origin"] for seen in double.requests} == {host}


async def test_generation_parameters_warn_on_today_s_protocol(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    async with H2oSession(url, prefetch=False) as session:
        with pytest.warns(ParametersIgnoredWarning, match=r"not sent: max_new_tokens, temperature\..*protocol='2023'"):
            assert await session.ask(USER, MODEL, temperature=0.2, max_new_tokens=5) == ANSWER
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            double.answered = False
            await session.ask(USER, MODEL, details=True)  # asks for information, sets nothing: no warning
    assert all("temperature" not in s.form.get("data", "") for s in double.requests)


async def test_the_provider_and_the_openai_client_speak_it_too(replay: tuple[ChatUIReplay, str]) -> None:
    _, url = replay
    assert await H2o.create_async(MODEL, USER, url=url) == ANSWER
    async with AsyncClient(url) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=USER)
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    with pytest.raises(ValueError, match="protocol must be"):
        H2o.create_async_generator(MODEL, USER, url=url, protocol="v3")


@pytest.fixture
def replay_thread() -> Iterator[tuple[ChatUIReplay, str]]:
    """The replay served from its own thread, for the command line's own event loop."""
    loop = asyncio.new_event_loop()
    double = ChatUIReplay()
    runner = web.AppRunner(double.app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield double, f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_the_command_line_detects_or_is_told(replay_thread: tuple[ChatUIReplay, str]) -> None:
    double, url = replay_thread
    result = CliRunner().invoke(cli, ["ask", "--url", url, "-m", MODEL, "--json", "What is the capital of France?"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == ANSWER
    assert double.paths()[0] == ("GET", "/api/v2/models")
    double.requests.clear()
    double.answered = False
    result = CliRunner().invoke(cli, ["ask", "--url", url, "--protocol", "current", "-m", MODEL, "Hi"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == ANSWER and double.paths()[0] == ("POST", "/conversation")
    result = CliRunner().invoke(cli, ["ask", "--url", url, "--protocol", "2024", "Hi"])
    assert result.exit_code == 2 and "2024" in result.output


async def test_a_conversation_turns_under_the_answer_read_back(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    async with H2oSession(url, prefetch=False) as session, await session.conversation(MODEL, "Be brief.") as chat:
        assert (chat.id, chat.parent) == (CONVERSATION, ROOT)
        assert await chat.send("What is the capital of France?").text() == ANSWER
        assert chat.title == "What is the capital of"
        assert await chat.send("And of Italy?").text() == ANSWER  # the replay answers alike
        assert chat.parent == ANSWER_ID
    posts = [json.loads(s.form["data"]) for s in double.requests if s.form]
    # The recorded read names no run of ours: the answer is found under the question under the parent.
    assert [post["id"] for post in posts] == [ROOT, ANSWER_ID]
    assert [post["inputs"] for post in posts] == ["What is the capital of France?", "And of Italy?"]
    assert json.loads(double.requests[1].body) == {"model": MODEL, "preprompt": "Be brief."}
    assert double.paths()[-1] == ("DELETE", f"/api/v2/conversations/{CONVERSATION}")


async def test_a_conversation_turn_left_early_is_stopped_and_still_the_parent(replay: tuple[ChatUIReplay, str]) -> None:
    double, url = replay
    async with (
        H2oSession(url, prefetch=False, protocol="current") as session,
        await session.conversation(MODEL) as chat,
    ):
        first = chat.send("What is the capital of France?")
        assert await first.__anext__() == "The"
        await first.aclose()
        await chat.send("Go on").text()
    stop = next(s for s in double.requests if s.path.endswith("/stop-generating"))
    assert json.loads(stop.body)["seenContentLength"] == 3
    assert [json.loads(s.form["data"])["id"] for s in double.requests if s.form] == [ROOT, ANSWER_ID]


async def test_conversations_need_today_s_protocol(chatui: tuple[ChatUIDouble, str]) -> None:
    _, url = chatui
    async with H2oSession(url, prefetch=False) as session:
        with pytest.raises(ValueError, match="protocol='current'"):
            await session.conversation()
