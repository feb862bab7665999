"""``GET /metrics``: what the server is doing, in Prometheus's text format (README "Metrics").

Off by default (``metrics = true`` turns it on) and answered only to the
addresses in ``metrics_allow_ips``. Each application has a registry of its
own rather than prometheus-client's global one, so that two servers in one
process (the tests, a replica beside another) never count into each other.
The queue's figures are read from the models when scraped, not kept twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from h2ochat.server.edge.http import CONFIG, MODELS, ApiError
from h2ochat.server.edge.security import address_in
from h2ochat.server.inference.runtime import Models

__all__ = ["METRICS", "AnswerTiming", "Metrics", "count_requests", "routes"]

log = logging.getLogger("h2ochat.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
routes = web.RouteTableDef()

# Seconds: a first token waits for a place and the prompt (tens of ms to minutes); a next token
# takes a few ms on a GPU to a few hundred on a small CPU.
_FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class AnswerTiming:
    """One answer's clock: the first token's wait, then each next token's."""

    __slots__ = ("_last", "_metrics", "_model", "_tokens")

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model
        self._last = time.perf_counter()
        self._tokens = 0

    def token(self) -> None:
        now = time.perf_counter()
        histogram = self._metrics.token_seconds if self._tokens else self._metrics.first_token_seconds
        histogram.labels(self._model).observe(now - self._last)
        self._last = now
        self._tokens += 1

    def end(self, outcome: str) -> None:
        """``outcome``: the finish reason, ``interrupted`` (a stop, the client gone) or ``error``."""
        self._metrics.answers.labels(self._model, outcome).inc()
        if self._tokens:
            self._metrics.tokens.labels(self._model).inc(self._tokens)


class Metrics:
    """The application's counters and histograms, and the collector that reads its models' queues."""

    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "h2ochat_requests",
            "HTTP requests answered, by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.answers = Counter(
            "h2ochat_answers", "Answers ended, by model and outcome", ["model", "outcome"], registry=registry
        )
        self.tokens = Counter("h2ochat_generated_tokens", "Tokens the models generated", ["model"], registry=registry)
        self.first_token_seconds = Histogram(
            "h2ochat_first_token_seconds",
            "Seconds from an answer's start to its first token, the wait included",
            ["model"],
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.token_seconds = Histogram(
            "h2ochat_token_seconds",
            "Seconds between one token of an answer and the next",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.database_errors = Counter(
            "h2ochat_database_errors",
            "Requests the database failed (unreachable or an unforeseen error)",
            ["kind"],
            registry=registry,
        )
        registry.register(_Queues(app))

    def answer(self, model: str) -> AnswerTiming:
        return AnswerTiming(self, model)


METRICS = web.AppKey("metrics", Metrics)


class _Queues(Collector):
    """Answers running and waiting, and places, per model: read when scraped."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        running = GaugeMetricFamily("h2ochat_answers_running", "Answers being generated now", labels=["model"])
        waiting = GaugeMetricFamily("h2ochat_queue_length", "Answers waiting for a place", labels=["model"])
        places = GaugeMetricFamily(
            "h2ochat_places", "Answers a model computes at once (0: no limit here, the engine queues)", labels=["model"]
        )
        models: Models | None = self._app.get(MODELS)
        for name, runtime in (models.runtimes if models else {}).items():
            running.add_metric([name], runtime.running)
            waiting.add_metric([name], runtime.waiting)
            places.add_metric([name], runtime.places)
        yield from (running, waiting, places)


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts every answered request by its route's pattern (never the path: ids would make a series each)."""
    metrics = request.app.get(METRICS)
    if metrics is None:
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # the redirects json_errors lets through
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "(no route)"
        metrics.requests.labels(request.method, route, str(status)).inc()


@routes.get("/metrics")
async def metrics_page(request: web.Request) -> web.Response:
    metrics = request.app.get(METRICS)
    if metrics is None:
        raise web.HTTPNotFound()
    config = request.app[CONFIG]
    address = _client_address(request)
    if not address_in(address, config.metrics_allow_ips):
        raise ApiError(
            403,
            f"/metrics is not answered to {address}: add the address (or its network) to metrics_allow_ips "
            "in the server's configuration to let it scrape",
        )
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _client_address(request: web.Request) -> str:
    """The peer's address; through a trusted proxy, the address that proxy saw (the last X-Forwarded-For
    entry, the one it added: the ones before it are whatever the client wrote)."""
    remote = request.remote or ""
    trusted = request.app[CONFIG].forwarded_allow_ips
    forwarded_for = request.headers.get("X-Forwarded-For")
    if forwarded_for and trusted and address_in(remote, trusted):
        return forwarded_for.split(",")[-1].strip()
    return remote
