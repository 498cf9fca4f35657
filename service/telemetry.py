"""Prometheus metrics of one app, kept in the app's own ``CollectorRegistry`` so apps in one process never collide.

:class:`MetricsMiddleware` counts and times every HTTP request by route template (never the raw path, which
would let clients create unbounded label values); the batcher and predictor feed the other collectors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_INFERENCE_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_PREPROCESS_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Confidence is mostly near 1: fine steps at the top show a model growing unsure long before accuracy drops.
_CONFIDENCE_BUCKETS = (0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0)
_UNMATCHED_ROUTE = "unmatched"
# Any token is a valid HTTP method: fold unknown ones into one label value.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Telemetry:
    """The collectors of one app and their registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._live: _LiveCollector | None = None
        self.requests = Counter(
            "digits_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "digits_http_request_duration_seconds",
            "Time from request start to the end of the response, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "digits_batch_size",
            "Requests per inference batch.",
            buckets=_BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "digits_queue_wait_seconds",
            "Time a prepared digit waited for its inference batch to start.",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.preprocess_seconds = Histogram(
            "digits_preprocess_seconds",
            "Time from handing an upload to the preprocessing pool to its prepared digit (including waiting).",
            buckets=_PREPROCESS_BUCKETS_S,
            registry=self.registry,
        )
        self.confidence = Histogram(
            "digits_prediction_confidence",
            "Confidence of each answered prediction's ensemble.",
            buckets=_CONFIDENCE_BUCKETS,
            registry=self.registry,
        )
        self.refusals = Counter(
            "digits_refusals",
            "Requests refused with 503, by reason (queue or budget full, worker died or overran, not ready).",
            ["reason"],
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "digits_inference_seconds",
            "Forward pass, calibration and copy back of one batch, per model.",
            ["model"],
            buckets=_INFERENCE_BUCKETS_S,
            registry=self.registry,
        )

    def track(
        self,
        *,
        queue_depth: Callable[[], int],
        preprocess_pending: Callable[[], int],
        inflight_bytes: Callable[[], int],
        model_versions: Callable[[], Mapping[str, int]],
    ) -> None:
        """Read the backlogs and served versions at scrape time instead of updating gauges on every change."""
        self._live = _LiveCollector(queue_depth, preprocess_pending, inflight_bytes, model_versions)
        self.registry.register(self._live)

    def count_refusal(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def render(self) -> bytes:
        """All collectors in the Prometheus text exposition format.

        Under ``PROMETHEUS_MULTIPROC_DIR`` (set by ``python -m service`` for its processes) the counters and
        histograms are the sums over every process of the service; the gauges are read live in this process.
        """
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        if self._live is not None:
            registry.register(self._live)
        return generate_latest(registry)


class _LiveCollector(Collector):
    """The gauges, read when scraped: backlogs (this front end's uploads; the queue of the inference process
    it uses) and the served versions."""

    def __init__(
        self,
        queue_depth: Callable[[], int],
        preprocess_pending: Callable[[], int],
        inflight_bytes: Callable[[], int],
        model_versions: Callable[[], Mapping[str, int]],
    ) -> None:
        self._gauges = (
            ("digits_queue_depth", "Requests waiting for an inference batch.", queue_depth),
            (
                "digits_preprocess_pending",
                "Uploads being decoded or waiting for a preprocessing worker.",
                preprocess_pending,
            ),
            (
                "digits_inflight_bytes",
                "Upload bytes reserved by requests being read or decoded (bounded by DIGITS_MAX_INFLIGHT_BYTES).",
                inflight_bytes,
            ),
        )
        self._model_versions = model_versions

    def collect(self) -> Iterator[Metric]:
        for name, documentation, read in self._gauges:
            yield GaugeMetricFamily(name, documentation, value=read())
        versions = self._model_versions()
        family = GaugeMetricFamily("digits_model_version", "Version being served, per model.", labels=["model"])
        # The info form: one series per served (model, version), so a fleet's mix shows in one count by version.
        info = GaugeMetricFamily(
            "digits_served_model_info", "1 for each model and the version served.", labels=["model", "version"]
        )
        for name, version in versions.items():
            family.add_metric([name], version)
            info.add_metric([name, str(version)], 1)
        yield family
        yield info


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body buffering) that records each HTTP request."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # An exception escaping the app becomes a 500 in the outer error middleware.
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        # Saved before the router rewrites the scope (a mount changes root_path).
        path, root_path = scope["path"], scope.get("root_path", "")
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            template = _route_template(scope, path, root_path)
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
            self.telemetry.requests.labels(template, method, str(status)).inc()
            self.telemetry.request_seconds.labels(template).observe(time.perf_counter() - started)


def _route_template(scope: Scope, path: str, root_path: str) -> str:
    """The path template of the route that took the request: FastAPI's routes record themselves in the scope;
    plain Starlette routes (``/openapi.json``, ``/docs``, the docs' asset mount) are matched again here."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    routes: list[BaseRoute] = getattr(scope.get("app"), "routes", [])
    probe = {"type": "http", "path": path, "root_path": root_path, "method": scope["method"]}
    for candidate in routes:
        if candidate.matches(probe)[0] is Match.FULL:
            return str(getattr(candidate, "path", _UNMATCHED_ROUTE))
    return _UNMATCHED_ROUTE
