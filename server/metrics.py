"""Prometheus metrics of ``registry serve`` (one collector registry per app, so apps never share counters)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Request latency buckets (seconds): a scored image takes tens of milliseconds to a few seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    """The counters, gauges and histograms served at ``GET /metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "structcore_requests",
            "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "structcore_request_seconds",
            "HTTP request latency in seconds, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images_scored = Counter(
            "structcore_images_scored", "Images scored, by category.", ["category"], registry=self.registry
        )
        self.images_flagged = Counter(
            "structcore_images_flagged",
            "Images scored as anomalous (hybrid score above the threshold), by category.",
            ["category"],
            registry=self.registry,
        )
        self.images_unknown = Counter(
            "structcore_images_unknown",
            "Images flagged unknown (unknown_score > 1: unlike every registered product), by category.",
            ["category"],
            registry=self.registry,
        )
        self.batch_images = Histogram(
            "structcore_batch_images",
            "Images per predict call (dynamic batching gathers concurrent requests).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.queue_images = Gauge(
            "structcore_queue_images", "Images waiting for the scoring worker.", registry=self.registry
        )
        self.categories = Gauge("structcore_categories", "Categories being served.", registry=self.registry)
        self.reloads = Counter(
            "structcore_registry_reloads",
            "Times the router was reloaded after a registry change.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
