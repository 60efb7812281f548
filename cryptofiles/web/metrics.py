"""Prometheus metrics: requests by route and status, latency, bytes in and out, uploads in flight.

gunicorn runs several worker processes; with ``PROMETHEUS_MULTIPROC_DIR`` set (the launcher sets it)
each worker writes its values there and ``GET /metrics`` (in ``health``, with its own token) adds them
up across workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

EXTENSION_KEY = "cryptofiles.metrics"
# The label values for requests outside the closed sets (see count() below).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
UNMATCHED = "unmatched"
# What GET /metrics answers with: the text format, without its version parameter.
MEDIA_TYPE = CONTENT_TYPE_LATEST.split(";")[0]


class Metrics:
    def __init__(self) -> None:
        # A registry per app: tests build many apps in one process.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cryptofiles_requests", "Requests answered.", ["route", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "cryptofiles_request_seconds", "Time to the first byte of the answer.", ["route"],
            registry=self.registry,
        )  # fmt: skip
        self.bytes_in = Counter(
            "cryptofiles_upload_bytes",
            "Plaintext bytes received by uploads.",
            registry=self.registry,
        )
        self.bytes_out = Counter(
            "cryptofiles_download_bytes", "Bytes sent by file downloads.", registry=self.registry
        )
        self.uploads_in_flight = Gauge(
            "cryptofiles_uploads_in_flight", "Uploads being received now.",
            multiprocess_mode="livesum", registry=self.registry,
        )  # fmt: skip

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    def counted_out(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bytes_out.inc(len(chunk))
            yield chunk

    def counted_in(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        self.uploads_in_flight.inc()
        try:
            for block in blocks:
                self.bytes_in.inc(len(block))
                yield block
        finally:
            self.uploads_in_flight.dec()


def init_metrics(app: Flask) -> Metrics:
    metrics = Metrics()
    app.extensions[EXTENSION_KEY] = metrics

    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        # Every label value comes from a closed set, since each new value is a new series that
        # lives in memory (and in the multiprocess files) until restart: the route pattern, never
        # the URL (file ids would make a series per file); any path no route matches is one value;
        # a method a client invented is "other" (3,000 invented methods once made 3,000 series).
        route = request.url_rule.rule if request.url_rule else UNMATCHED
        method = request.method if request.method in KNOWN_METHODS else OTHER_METHOD
        metrics.requests.labels(route, method, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    return metrics


def current_metrics() -> Metrics:
    """The metrics of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]


def child_exit(server: object, worker: object) -> None:
    """gunicorn hook: forget a dead worker's live gauges (uploads in flight)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined,no-untyped-call]
