"""The client reattaches to an answer whose connection broke, in both generations (issue 22)."""

from __future__ import annotations

import random

import pytest
from msgspec.structs import replace

from h2ochat import H2o, H2oSession, ReadError
from h2ochat.server import start_server
from reliability.cutter import CuttingProxy
from tests.helpers import FIXED_MODEL, fixed_config

TEXT = "".join(f"e{i} " for i in range(80))
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize("protocol", ["2023", "current"])
@pytest.mark.parametrize("at", [1, 40, 300, 700])
async def test_a_cut_connection_still_gives_the_whole_answer_exactly_once(protocol: str, at: int) -> None:
    config = replace(fixed_config(text=TEXT, delay=0.005), welcome_gate=False)
    async with start_server(config) as server:
        port = int(server.url.rsplit(":", 1)[1])
        async with CuttingProxy(port, lambda: at) as proxy:
            url = await proxy.start()
            async with H2oSession(url, protocol=protocol, prefetch=False) as session:
                pieces = [piece async for piece in session.stream(MESSAGES, FIXED_MODEL)]
            assert proxy.made == 1
    assert "".join(pieces) == TEXT


async def test_several_cuts_including_the_reattach_streams(  # the network keeps failing
) -> None:
    config = replace(fixed_config(text=TEXT, delay=0.005), welcome_gate=False)
    chooser = random.Random(7)
    async with start_server(config) as server:
        port = int(server.url.rsplit(":", 1)[1])
        async with CuttingProxy(port, lambda: chooser.randrange(1, 400), cuts=5) as proxy:
            url = await proxy.start()
            for protocol in ("2023", "current"):
                proxy.cuts = 5
                async with H2oSession(url, protocol=protocol, prefetch=False) as session:
                    text = await session.ask(MESSAGES, FIXED_MODEL)
                assert text == TEXT
            assert proxy.made >= 6


async def test_the_seed_s_provider_reattaches_too() -> None:
    config = replace(fixed_config(text=TEXT, delay=0.005), welcome_gate=False)
    async with start_server(config) as server:
        port = int(server.url.rsplit(":", 1)[1])
        async with CuttingProxy(port, lambda: 200) as proxy:
            url = await proxy.start()
            pieces = [p async for p in H2o.create_async_generator(FIXED_MODEL, MESSAGES, url=url)]
            assert proxy.made == 1
    assert "".join(pieces) == TEXT


async def test_without_reattach_or_on_a_server_that_keeps_no_runs_the_break_is_a_read_error() -> None:
    for config, reattach in (
        (replace(fixed_config(text=TEXT, delay=0.005), welcome_gate=False), False),
        (replace(fixed_config(text=TEXT, delay=0.005), welcome_gate=False, resumable_answers=False), True),
    ):
        async with start_server(config) as server:
            port = int(server.url.rsplit(":", 1)[1])
            async with CuttingProxy(port, lambda: 300, mark=b"\r\nH2ochat-Left-Out:") as proxy:
                url = await proxy.start()
                async with H2oSession(url, protocol="2023", prefetch=False, reattach=reattach) as session:
                    with pytest.raises(ReadError) as caught:
                        await session.ask(MESSAGES, FIXED_MODEL)
        assert TEXT.startswith(caught.value.partial_text or "")
