"""Benchmark 6: the web page in Chromium, against the h2ochat server on loopback.

- Load: from navigation to the text box being usable (the page's ``h2ochat-ready`` mark: models,
  conversation list and address read), with an empty HTTP cache (a fresh browser context holding
  only the session cookie) and on a reload (files revalidated by ETag). Against it, the server's
  part: when the last byte of the last response arrived (resource timing).
- Token to paint: for each token, from its event reaching the page (the stream's read resolving)
  to the frame that shows it being painted (the page's trace, on when ``window.h2ochatTrace``
  exists), over a long Markdown answer streamed at a steady pace by the fixed backend. Against it,
  the time the server took to send the answer, as seen by the page (first to last token).

Chromium is Debian's (/usr/bin/chromium), driven by Playwright's Python package.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import Section, Target, start_child
from bench.server import FIXED_MODEL

__all__ = ["ARGS", "CHROMIUM", "answer_text", "run"]

CHROMIUM = "/usr/bin/chromium"
# As root in a container Chromium needs --no-sandbox; the rest keep it from calling home or updating.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
READY = "() => performance.getEntriesByName('h2ochat-ready')[0]?.startTime ?? null"
LAST_BYTE = "() => Math.max(...performance.getEntriesByType('resource').map((e) => e.responseEnd))"
# The answer's stream: the longest of the requests to /conversation/<id> (the others are JSON reads).
STREAM_SPAN = (
    "() => Math.max(...performance.getEntriesByType('resource')"
    ".filter((e) => /\\/conversation\\/\\w+$/.test(e.name)).map((e) => e.responseEnd - e.responseStart))"
)
DONE = (
    "() => { const a = [...document.querySelectorAll('article.assistant')].pop(); "
    "return a && a.getAttribute('aria-busy') === 'false'; }"
)


def answer_text(tokens: int) -> str:
    """About ``tokens`` words of Markdown (paragraphs, lists, code); the fixed backend sends a word per token."""
    block = (
        "Streaming a long answer means the page must keep up with every token. **Each paragraph** "
        "has `inline code` and a [link](https://example.com).\n\n- a list item\n- another one\n\n"
        "```python\ndef total(values):\n    return sum(v * 2 for v in values)  # doubled\n```\n\n"
    )
    return block * (tokens // len(block.split()) + 1)


def run(*, tokens: int = 2000, delay: float = 0.005, loads: int = 10, repeats: int = 3) -> Section:
    from playwright.sync_api import sync_playwright

    section = Section(
        "page",
        f"6. The web page in Chromium: load, and token to paint over a {tokens:,}-token answer",
        "",
        parameters={"tokens": tokens, "delay_s": delay, "loads": loads, "repeats": repeats},
    )
    text = answer_text(tokens)
    with (
        start_child("bench.server", "--fixed", text, "--delay", str(delay)) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            state = _accept_welcome(browser, server.url)
            loads_measured = [_load(browser, server.url, state) for _ in range(loads)]
            streams = [_stream(browser, server.url, state) for _ in range(repeats)]
        finally:
            browser.close()
    _report(section, loads_measured, streams, tokens)
    return section


def _accept_welcome(browser: Any, url: str) -> Any:
    """A session that has passed the welcome gate, as a storage state (its cookie) for fresh contexts."""
    context = browser.new_context(base_url=url)
    page = context.new_page()
    page.goto("/")
    page.get_by_role("button", name="Start chatting").click()
    page.wait_for_selector("#welcome:not([open])", state="attached")
    state = context.storage_state()
    context.close()
    return state


def _load(browser: Any, url: str, state: Any) -> dict[str, float]:
    context = browser.new_context(base_url=url, storage_state=state)
    page = context.new_page()
    try:
        page.goto("/")
        page.wait_for_function(READY)
        cold, cold_server = page.evaluate(READY), page.evaluate(LAST_BYTE)
        page.reload()
        page.wait_for_function(READY)
        warm, warm_server = page.evaluate(READY), page.evaluate(LAST_BYTE)
    finally:
        context.close()
    return {"cold": cold, "cold_server": cold_server, "warm": warm, "warm_server": warm_server}


def _stream(browser: Any, url: str, state: Any) -> dict[str, Any]:
    context = browser.new_context(base_url=url, storage_state=state)
    page = context.new_page()
    try:
        page.goto("/")
        page.wait_for_function(READY)
        page.get_by_label("Model").select_option(FIXED_MODEL)
        page.evaluate("() => { window.h2ochatTrace = []; }")
        box = page.get_by_role("textbox", name="Message")
        box.fill("A long answer, please.")
        started = page.evaluate("performance.now()")
        box.press("Enter")
        page.wait_for_function(DONE, timeout=600_000)
        finished = page.evaluate("performance.now()")
        trace = page.evaluate("window.h2ochatTrace")
        span = page.evaluate(STREAM_SPAN)
    finally:
        context.close()
    return {"trace": trace, "server_span": span, "page_span": finished - started}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _report(section: Section, loads: list[dict[str, float]], streams: list[dict[str, Any]], tokens: int) -> None:
    case = "load to a usable text box"
    section.add(case, "empty cache (fresh context, session cookie)", [m["cold"] for m in loads], "ms")
    section.add(case, "  of which the server's last byte", [m["cold_server"] for m in loads], "ms")
    section.add(case, "reload (files revalidated, 304)", [m["warm"] for m in loads], "ms")
    section.add(case, "  of which the server's last byte", [m["warm_server"] for m in loads], "ms")
    # What the page adds over its files and JSON reads arriving: 1.00 would be nothing.
    section.add(case, "ratio: empty cache / its last byte", [m["cold"] / m["cold_server"] for m in loads], "x")
    paint = f"token to paint, {tokens:,} tokens"
    p50 = [_percentile(s["trace"], 0.5) for s in streams]
    p99 = [_percentile(s["trace"], 0.99) for s in streams]
    section.add(paint, "p50", p50, "ms")
    section.add(paint, "p99", p99, "ms")
    section.add(paint, "max", [max(s["trace"]) for s in streams], "ms")
    section.add(paint, "tokens traced", [len(s["trace"]) for s in streams], "tokens")
    spans = [s for s in streams if s["server_span"]]
    if spans:
        section.add(paint, "server: the answer's stream, first to last byte", [s["server_span"] for s in spans], "ms")
        section.add(paint, "page: send to the last token painted", [s["page_span"] for s in spans], "ms")
        section.add(paint, "ratio: page / server", [s["page_span"] / s["server_span"] for s in spans], "x")
    cold = statistics.median(m["cold"] for m in loads)
    section.targets.append(Target("load under 300 ms (empty cache, median)", cold < 300, f"{cold:.0f} ms"))
    worst = max(p99)
    section.targets.append(Target("token to paint p99 under 50 ms (worst repeat)", worst < 50, f"{worst:.1f} ms"))
    section.notes.append(
        "Token to paint runs from the read of the stream that delivered the token to a task queued from the "
        "animation frame that drew it (it runs once that frame is painted); the page redraws at most once per frame."
    )
