"""Running one client call against one fault, and judging what came out.

A :class:`Case` names the fault (a :class:`~reliability.faultserver.Fault`
list, a broken event stream, or a hostile environment: nothing listening,
TLS trouble, a refusing proxy) and what the client must do about it. The
runner makes the call, bounds it in time, and records a :class:`Record`:
the exception, its message, how long it took to surface, and the
conversation books of the double (created, deleted, leaked).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import gc
import re
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h2ochat import AsyncResult, DeleteFailedWarning, H2o, H2oChatError, H2oSession, Messages, RateLimited, Timeout
from reliability.faultserver import Fault, FaultServer
from reliability.proxies import HttpProxy, Socks5Proxy
from reliability.tls import Certificate, make_certificate

__all__ = ["HANG_BOUND", "MESSAGES", "PROXY_SECRET", "SHORT", "Case", "Record", "run_case"]

MESSAGES: Messages = [{"role": "user", "content": "Hi"}]
PROXY_SECRET = "s3cr3t-pw"  # must never appear in an error message
HANG_BOUND = 30.0  # a call still running after this long counts as a hang
SHORT = Timeout(0.5)  # the limits of the cases that stall on purpose
_ANY = object()


@dataclass
class Case:
    """One fault and what the client must make of it (``expect`` None: a normal answer)."""

    name: str
    group: str
    faults: list[Fault] = field(default_factory=list)
    events: list[bytes] | None = None  # the message step's stream, if not the normal answer
    # plain, refused, tls, https-to-plain, proxy-refused, http-proxy:MODE, connect-proxy:MODE, socks:MODE
    env: str = "plain"
    expect: tuple[type[BaseException], ...] | None = None
    match: str | None = None  # a regex the message must contain
    partial: str | None = None  # the partial_text the error must carry
    retry_after: Any = _ANY  # RateLimited.retry_after, or a (low, high) range
    text: str | None = None  # the whole answer, for a success
    warns: bool = False  # a DeleteFailedWarning is expected
    max_retries: int = 0
    # Generous by default, so that a busy machine cannot turn a slow answer into a timeout;
    # the cases that stall on purpose set short limits (SHORT) to surface quickly.
    timeout: Timeout = field(default_factory=lambda: Timeout(10))
    max_event_size: int = 4096
    cancel_after: float | None = None
    cancel_again_after: float | None = None  # a second cancellation, this long after the first
    must_delete: bool = False  # every conversation must end deleted (no delete may be given up)
    break_early: bool = False
    session: bool = False  # a reused H2oSession (prefetching) instead of the one-shot provider
    loose: bool = False  # random cases: any typed outcome is acceptable


@dataclass
class Record:
    """What one call did."""

    case: str
    group: str
    outcome: str  # "ok", the exception's class name, or "hang"
    message: str
    seconds: float
    typed: bool
    hang: bool
    created: int
    deleted: int
    leaked: int
    undeleted: int
    orphaned: int
    warned: bool
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


async def run_case(case: Case, hang_bound: float = HANG_BOUND) -> Record:
    """Make the call ``case`` describes against a fresh double, and judge it."""
    async with _environment(case) as (url, proxy, server):
        for fault in case.faults:
            server.inject(fault)
        if case.events is not None:
            server.events = case.events
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outcome, elapsed, hang = await _bounded_call(case, url, proxy, hang_bound)
            # An aiohttp session or connector left open warns when it is collected: collect now.
            gc.collect()
        warned = any(issubclass(w.category, DeleteFailedWarning) for w in caught)
        unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        record = _record(case, server, outcome, elapsed, hang, warned)
        record.problems += [f"left open: {message[:80]}" for message in unclosed]
        return record


async def _bounded_call(
    case: Case, url: str, proxy: str | None, hang_bound: float
) -> tuple[BaseException | str, float, bool]:
    """Run the call; returns (the exception or the text, seconds, whether it hung)."""
    started = time.monotonic()
    task = asyncio.ensure_future(_call(case, url, proxy))
    if case.cancel_after is not None:
        await asyncio.wait([task], timeout=case.cancel_after)
        task.cancel()
        if case.cancel_again_after is not None:
            await asyncio.wait([task], timeout=case.cancel_again_after)
            task.cancel()
    done, _ = await asyncio.wait([task], timeout=hang_bound)
    elapsed = time.monotonic() - started
    if not done:
        task.cancel()
        await asyncio.wait([task], timeout=10)
        return TimeoutError("hang"), elapsed, True
    try:
        return task.result(), elapsed, False
    except BaseException as exc:
        return exc, elapsed, False


async def _call(case: Case, url: str, proxy: str | None) -> str:
    options: dict[str, Any] = {
        "timeout": case.timeout,
        "max_retries": case.max_retries,
        "max_event_size": case.max_event_size,
    }
    if case.session:
        async with H2oSession(url, proxy=proxy, prefetch=True, **options) as session:
            return await _consume(session.stream(MESSAGES), case.break_early)
    return await _consume(H2o.create_async_generator("", MESSAGES, proxy=proxy, url=url, **options), case.break_early)


async def _consume(result: AsyncResult, break_early: bool) -> str:
    async with result:  # closing it deletes the conversation before we look at the books
        if break_early:
            async for token in result:
                return token
            return ""
        return await result.text()


def _record(
    case: Case, server: FaultServer, outcome: BaseException | str, elapsed: float, hang: bool, warned: bool
) -> Record:
    exc = outcome if isinstance(outcome, BaseException) else None
    cancelled = isinstance(exc, asyncio.CancelledError) and case.cancel_after is not None
    record = Record(
        case=case.name,
        group=case.group,
        outcome="hang" if hang else ("ok" if exc is None else type(exc).__name__),
        message="" if exc is None else str(exc),
        seconds=elapsed,
        typed=exc is None or hang or cancelled or isinstance(exc, H2oChatError),
        hang=hang,
        created=len(server.created),
        deleted=len(server.deleted),
        leaked=len(server.leaked),
        undeleted=len(server.undeleted),
        orphaned=len(server.orphaned),
        warned=warned,
        problems=[],
    )
    record.problems = _problems(case, record, exc, outcome)
    return record


def _problems(case: Case, record: Record, exc: BaseException | None, outcome: object) -> list[str]:
    problems = []
    if record.hang:
        problems.append("hung")
    if not record.typed:
        problems.append(f"untyped exception {type(exc).__name__}: {exc}")
    if record.leaked:
        problems.append(f"{record.leaked} conversation(s) leaked")
    if PROXY_SECRET in record.message:
        problems.append("the proxy password appears in the message")
    if case.must_delete and (record.undeleted or record.orphaned):
        problems.append(f"conversations not deleted: {record.undeleted} refused, {record.orphaned} orphaned")
    if case.loose:
        return problems
    if case.expect is None:
        if exc is not None:
            problems.append(f"expected an answer, got {type(exc).__name__}: {exc}")
        elif case.text is not None and outcome != case.text:
            problems.append(f"expected the text {case.text!r}, got {outcome!r}")
    elif not isinstance(exc, case.expect):
        problems.append(f"expected {'/'.join(c.__name__ for c in case.expect)}, got {record.outcome}: {exc or outcome}")
    else:
        problems += _detail_problems(case, exc)
    if case.warns != record.warned:
        problems.append(f"DeleteFailedWarning expected: {case.warns}, warned: {record.warned}")
    return problems


def _detail_problems(case: Case, exc: BaseException) -> list[str]:
    problems = []
    if case.match is not None and not re.search(case.match, str(exc)):
        problems.append(f"message {str(exc)!r} does not match {case.match!r}")
    if case.partial is not None and getattr(exc, "partial_text", None) != case.partial:
        problems.append(f"partial_text {getattr(exc, 'partial_text', None)!r} != {case.partial!r}")
    if case.retry_after is not _ANY:
        value = exc.retry_after if isinstance(exc, RateLimited) else "missing"
        wanted = case.retry_after
        fits = (
            value == wanted
            if not isinstance(wanted, tuple)
            else (value is not None and wanted[0] <= value <= wanted[1])
        )
        if not fits:
            problems.append(f"retry_after {value!r}, expected {wanted!r}")
    return problems


# Environments -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _environment(case: Case) -> AsyncIterator[tuple[str, str | None, FaultServer]]:
    """The fault server the case talks to, and the URL and proxy to reach it by."""
    kind, _, mode = case.env.partition(":")
    tls = _certificate().server_context() if kind == "tls" else None
    async with FaultServer(ssl_context=tls) as server:
        url = await server.start()
        if kind == "refused":
            yield f"http://127.0.0.1:{_closed_port()}", None, server
        elif kind == "proxy-refused":
            yield url, f"http://user:{PROXY_SECRET}@127.0.0.1:{_closed_port()}", server
        elif kind == "https-to-plain":
            yield url.replace("http://", "https://"), None, server
        elif kind in ("http-proxy", "connect-proxy", "socks"):
            proxy = HttpProxy(mode) if kind != "socks" else Socks5Proxy(mode)
            port = await proxy.start()
            try:
                scheme = "socks5" if kind == "socks" else "http"
                # CONNECT is what aiohttp sends for an https:// target; the target itself is never reached.
                target = "https://127.0.0.1:9" if kind == "connect-proxy" else url
                yield target, f"{scheme}://user:{PROXY_SECRET}@127.0.0.1:{port}", server
            finally:
                await proxy.close()
        else:
            yield url, None, server


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@functools.lru_cache(maxsize=1)
def _certificate() -> Certificate:
    directory = tempfile.mkdtemp(prefix="h2ochat-tls-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return make_certificate(Path(directory))
