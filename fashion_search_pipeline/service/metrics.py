"""Prometheus metrics of the service, in a registry of its own (one per app, so tests do not collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class TableStatsCollector:
    """Gauges read at scrape time: rows and model version of every embedding table."""

    def __init__(self, table_stats: Callable[[], Iterable[tuple[str, int, str]]]):
        self._table_stats = table_stats

    def collect(self):
        rows = GaugeMetricFamily("fashion_search_table_rows", "Rows in an embedding table", labels=["table"])
        versions = GaugeMetricFamily(
            "fashion_search_table_model_version", "1 for the model version a table's vectors were made by",
            labels=["table", "model_version"],
        )
        for table, count, version in self._table_stats():
            rows.add_metric([table], count)
            versions.add_metric([table, version], 1)
        yield rows
        yield versions


class ServiceMetrics:
    """Request counts and latencies per route and status, latency per stage, encode batch sizes."""

    def __init__(self, table_stats: Callable[[], Iterable[tuple[str, int, str]]]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fashion_search_requests", "HTTP requests", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "fashion_search_request_seconds", "HTTP request latency", ["route", "method", "status"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.stages = Histogram(
            "fashion_search_stage_seconds",
            "Latency per stage: decode, encode, search_image, search_text, search_keyword, fusion, payload, thumbnail",
            ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "fashion_search_encode_batch_size", "Queries encoded together by the micro-batcher", ["model", "modality"],
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.registry.register(TableStatsCollector(table_stats))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method, str(status)).observe(seconds)

    def observe_stages(self, timings: dict[str, float]) -> None:
        """Record the seconds each named stage of one request took."""
        for stage, seconds in timings.items():
            self.stages.labels(stage).observe(seconds)
