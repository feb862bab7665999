"""The H2o client against a chat-ui double over real loopback HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from h2ochat import (
    AsyncResult,
    ConnectError,
    ConversationNotFound,
    DeleteFailedWarning,
    FirstTokenTimeout,
    H2o,
    H2oSession,
    HTTPStatusError,
    IncompleteStream,
    MalformedEvent,
    ModelOverloaded,
    ProtocolError,
    RateLimited,
    ReadError,
    ReadTimeout,
    ServerError,
    Timeout,
)
from h2ochat.protocol.tgi import encode_error_event
from tests.chatui import CUT, STALL, ChatUIDouble, answer, token_event

USER = [{"role": "user", "content": "Hi"}]


async def collect(result: AsyncResult) -> list[str]:
    return [token async for token in result]


async def wait_for(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_four_steps_stream_tokens_and_delete(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    result = H2o.create_async_generator("", USER, url=url)
    assert await collect(result) == ["Hello", " world"]
    assert [(m, p) for m, p, _ in double.requests] == [
        ("GET", "/api/v2/models"),  # which generation: the 404 of a chat-ui of 2023, so its four steps follow
        ("POST", "/settings"),
        ("POST", "/conversation"),
        ("POST", f"/conversation/{double.created[0]}"),
        ("DELETE", f"/conversation/{double.created[0]}"),
    ]
    assert all(headers["Referer"] == url + "/" for _, _, headers in double.requests)
    assert double.leaked == set()
    body = double.bodies[0]
    assert body["inputs"] == "Hi" and body["stream"] is True
    assert body["parameters"] == {
        "temperature": 0.4,
        "truncate": 2048,
        "max_new_tokens": 1024,
        "do_sample": True,
        "repetition_penalty": 1.2,
        "return_full_text": False,
    }
    assert set(body["options"]) == {"id", "response_id", "is_retry", "use_cache", "web_search_id"}
    assert result.conversation_id == double.created[0]


async def test_await_spelling_and_special_tokens_skipped(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("a"), token_event("<pad>", special=True), token_event("b", final="ab")])
    tokens = [t async for t in await H2o.create_async_generator("", USER, url=url)]
    assert tokens == ["a", "b"]


async def test_kwargs_override_parameters_and_transport_options_are_not_sent(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    result = H2o.create_async_generator(
        "my-model",
        USER,
        url=url,
        temperature=0.1,
        max_new_tokens=64,
        stop=["\n"],
        seed=1,
        details=True,
        timeout=30,
        headers={"X-Test": "1"},
        cookies={"extra": "c"},
        max_retries=0,
        stream=True,
    )
    await collect(result)
    parameters = double.bodies[0]["parameters"]
    assert parameters["temperature"] == 0.1 and parameters["max_new_tokens"] == 64
    assert parameters["stop"] == ["\n"] and parameters["seed"] == 1 and parameters["details"] is True
    assert not {"url", "timeout", "headers", "cookies", "max_retries", "stream"} & parameters.keys()
    _, _, headers = double.requests[0]
    assert headers["X-Test"] == "1" and "extra=c" in headers["Cookie"]


async def test_model_goes_to_settings_and_conversation(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    received: list[Any] = []

    async def spy(request: web.Request) -> web.StreamResponse:
        received.append(await request.json())
        return web.json_response({"conversationId": "abc"})

    double.fail("conversation", spy)
    double.owners["abc"] = "?"
    with pytest.raises(ConversationNotFound):
        await collect(H2o.create_async_generator("", USER, url=url, max_retries=0))
    assert received == [{"model": H2o.model}]


async def test_url_from_environment(chatui: tuple[ChatUIDouble, str], monkeypatch: pytest.MonkeyPatch) -> None:
    double, url = chatui
    monkeypatch.setenv("H2OCHAT_URL", url)
    assert "".join(await collect(H2o.create_async_generator("", USER))) == "Hello world"
    assert len(double.created) == 1


async def test_settings_303_is_success_and_not_followed(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.settings_as_html = True
    assert await collect(H2o.create_async_generator("", USER, url=url)) == ["Hello", " world"]
    assert [p for _, p, _ in double.requests].count("/") == 0


async def test_cookie_kept_for_ip_address(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    assert url.startswith("http://127.0.0.1")
    await collect(H2o.create_async_generator("", USER, url=url))
    cookies = [headers.get("Cookie", "") for _, _, headers in double.requests[1:]]
    assert all(c.startswith("hf-chat=") for c in cookies) and len(set(cookies)) == 1


async def test_reused_session_posts_settings_once_and_prefetches(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    async with H2oSession(url) as session:
        for _ in range(3):
            assert await session.ask(USER) == "Hello world"
        result = H2o.create_async_generator("", USER, session=session)
        assert await result.text() == "Hello world"
        assert double.settings_posts == 1
        assert len(double.created) == 5  # four calls plus one made in advance
    assert double.leaked == set()


async def test_session_cannot_be_combined_with_transport_options(chatui: tuple[ChatUIDouble, str]) -> None:
    _, url = chatui
    async with H2oSession(url) as session:
        with pytest.raises(ValueError, match="url cannot be combined with session="):
            H2o.create_async_generator("", USER, session=session, url=url)


async def test_call_info_with_details(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply(answer("a", "b", details=True))
    result = H2o.create_async_generator("", USER, url=url, details=True)
    assert await result.text() == "ab"
    assert result.finish_reason == "eos_token" and result.generated_tokens == 2
    assert result.info.generated_text == "ab" and result.conversation_id in double.deleted


async def test_stream_stops_at_final_event_without_waiting_for_close(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([*answer("x"), STALL])
    started = time.monotonic()
    assert await collect(H2o.create_async_generator("", USER, url=url)) == ["x"]
    assert time.monotonic() - started < 5
    assert double.leaked == set()


async def test_stream_cut_before_final_event(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("partial "), token_event("text")])
    with pytest.raises(IncompleteStream, match="ended before its final event") as caught:
        await collect(H2o.create_async_generator("", USER, url=url))
    assert caught.value.partial_text == "partial text"
    assert double.leaked == set()


async def test_connection_reset_mid_stream(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("a"), 0.05, CUT])
    with pytest.raises(ReadError) as caught:
        await collect(H2o.create_async_generator("", USER, url=url))
    assert caught.value.partial_text == "a" and caught.value.step == "message"
    assert double.leaked == set()


async def test_error_event_mid_stream(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("a"), encode_error_event("Model is overloaded", "overloaded")])
    with pytest.raises(ModelOverloaded, match="Model is overloaded") as caught:
        await collect(H2o.create_async_generator("", USER, url=url))
    assert caught.value.partial_text == "a"
    assert double.leaked == set()


async def test_tokens_before_an_error_in_the_same_read_are_delivered(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("a") + token_event("b") + encode_error_event("boom", "generation")])
    received: list[str] = []
    with pytest.raises(Exception, match="boom"):
        async for token in H2o.create_async_generator("", USER, url=url):
            received.append(token)
    assert received == ["a", "b"]


async def test_malformed_event(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([b"data:{broken\n\n"])
    with pytest.raises(MalformedEvent):
        await collect(H2o.create_async_generator("", USER, url=url))
    assert double.leaked == set()


async def test_wrong_content_type(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui

    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>login</html>", content_type="text/html")

    double.fail("message", html)
    with pytest.raises(ProtocolError, match="text/html instead of an event stream"):
        await collect(H2o.create_async_generator("", USER, url=url))
    assert double.leaked == set()


async def test_consumer_breaking_early_deletes_conversation(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("a"), STALL])
    async for _ in H2o.create_async_generator("", USER, url=url):
        break
    await wait_for(lambda: bool(double.deleted))
    assert double.leaked == set() and len(double.deleted) == 1


async def test_explicit_aclose_deletes_before_returning(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("a"), STALL])
    result = H2o.create_async_generator("", USER, url=url)
    async with result:
        assert await result.__anext__() == "a"
    assert double.leaked == set() and len(double.deleted) == 1


async def test_cancelled_consumer_deletes_conversation(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("a"), STALL])
    task = asyncio.ensure_future(collect(H2o.create_async_generator("", USER, url=url)))
    await wait_for(lambda: bool(double.bodies))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert double.leaked == set() and len(double.deleted) == 1


async def test_stall_before_first_token_is_a_first_token_timeout(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([STALL])
    started = time.monotonic()
    with pytest.raises(FirstTokenTimeout):
        await collect(H2o.create_async_generator("", USER, url=url, timeout=Timeout(first_token=0.3)))
    assert 0.25 < time.monotonic() - started < 3
    assert double.leaked == set()


async def test_keepalives_do_not_count_as_first_token(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([b":\n\n", 0.2, b":\n\n", 0.2, b":\n\n", STALL])
    with pytest.raises(FirstTokenTimeout):
        await collect(H2o.create_async_generator("", USER, url=url, timeout=Timeout(first_token=0.3)))


async def test_stall_between_events_is_a_read_timeout(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("a"), STALL])
    with pytest.raises(ReadTimeout) as caught:
        await collect(H2o.create_async_generator("", USER, url=url, timeout=Timeout(read=0.3)))
    assert caught.value.partial_text == "a"
    assert double.leaked == set()


async def test_slow_but_steady_stream_is_never_cut(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    script: list[Any] = []
    for i in range(8):
        script += [token_event(str(i)), 0.1]
    double.reply([*script, token_event("", final="01234567", special=True)])
    tokens = await collect(H2o.create_async_generator("", USER, url=url, timeout=Timeout(read=0.3, first_token=0.3)))
    assert "".join(tokens) == "01234567"


async def test_keepalives_keep_a_slow_answer_alive(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.reply([token_event("a"), 0.2, b":\n\n", 0.2, b":\n\n", 0.2, *answer("b")])
    tokens = await collect(H2o.create_async_generator("", USER, url=url, timeout=Timeout(read=0.3)))
    assert tokens == ["a", "b"]


async def test_retry_after_429_on_settings(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.fail_status("settings", 429, '{"message": "slow down"}', headers={"Retry-After": "1"})
    started = time.monotonic()
    assert await collect(H2o.create_async_generator("", USER, url=url)) == ["Hello", " world"]
    assert time.monotonic() - started >= 0.95


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_5xx_on_conversation_retried_then_fails_with_html_excerpt(
    chatui: tuple[ChatUIDouble, str], status: int
) -> None:
    double, url = chatui
    page = f"<html><head><title>{status} Gateway trouble</title></head><body>...</body></html>"
    for _ in range(3):
        double.fail_status("conversation", status, page, content_type="text/html")
    with pytest.raises(ServerError) as caught:
        await collect(H2o.create_async_generator("", USER, url=url, max_retries=2))
    assert caught.value.status == status and caught.value.step == "conversation"
    assert f"HTTP {status} from {url}/conversation: {status} Gateway trouble" in str(caught.value)
    assert [p for _, p, _ in double.requests].count("/conversation") == 3


async def test_429_exhausted_carries_retry_after(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.fail_status("conversation", 429, "busy", content_type="text/plain", headers={"Retry-After": "0"})
    with pytest.raises(RateLimited) as caught:
        await collect(H2o.create_async_generator("", USER, url=url, max_retries=0))
    assert caught.value.retry_after == 0


async def test_500_on_message_is_not_retried(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    double.fail_status("message", 500, '{"message": "kaput"}')
    with pytest.raises(ServerError, match=r"message step failed: HTTP 500 .*kaput"):
        await collect(H2o.create_async_generator("", USER, url=url))
    assert sum(1 for m, p, _ in double.requests if p.startswith("/conversation/") and m == "POST") == 1
    assert double.leaked == set()


async def test_welcome_gate_error_is_explained(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui

    async def ignore(request: web.Request) -> web.StreamResponse:
        return web.json_response({"type": "redirect"})  # pretend success without accepting

    double.fail("settings", ignore)
    with pytest.raises(HTTPStatusError, match="welcome modal") as caught:
        await collect(H2o.create_async_generator("", USER, url=url))
    assert caught.value.status == 405


async def test_failed_delete_after_complete_answer_is_a_warning(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    for _ in range(3):
        double.fail_status("delete", 503, "down")
    with pytest.warns(DeleteFailedWarning, match="could not be deleted"):
        tokens = await collect(H2o.create_async_generator("", USER, url=url))
    assert tokens == ["Hello", " world"]


async def test_connection_refused_is_retried_then_typed() -> None:
    started = time.monotonic()
    with pytest.raises(ConnectError, match="could not connect"):
        await collect(H2o.create_async_generator("", USER, url="http://127.0.0.1:9", max_retries=1))
    assert time.monotonic() - started < 5


async def test_foreign_conversation_is_not_found(chatui: tuple[ChatUIDouble, str]) -> None:
    double, url = chatui
    async with H2oSession(url, prefetch=False) as other:
        await other.ask(USER)
    double.owners["feedface"] = "someone else"

    async def foreign(request: web.Request) -> web.StreamResponse:
        return web.json_response({"conversationId": "feedface"})

    double.fail("conversation", foreign)
    with pytest.raises(ConversationNotFound, match="Conversation not found"):
        await collect(H2o.create_async_generator("", USER, url=url))


def test_sync_completion_from_plain_code(chatui_thread: str) -> None:
    tokens = list(H2o.create_completion("", USER, url=chatui_thread))
    assert tokens == ["Hello", " world"]
    assert list(H2o.create_completion("", USER, stream=False, url=chatui_thread)) == ["Hello world"]


async def test_sync_completion_inside_a_running_loop(chatui_thread: str) -> None:
    assert "".join(H2o.create_completion("", USER, url=chatui_thread)) == "Hello world"


async def test_create_async_joins(chatui: tuple[ChatUIDouble, str]) -> None:
    _, url = chatui
    assert await H2o.create_async("", USER, url=url) == "Hello world"


def test_bad_messages_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match="empty"):
        H2o.create_async_generator("", [])
    with pytest.raises(ValueError, match="must be a list"):
        H2o.create_completion("", "hi")  # type: ignore[arg-type]


def test_class_attributes() -> None:
    assert H2o.url == "https://gpt-gm.h2o.ai"
    assert H2o.model == "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"
    assert H2o.supports_stream and H2o.supports_message_history and H2o.working
