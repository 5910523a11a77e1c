"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (several apps in a process never collide).

Exposed at ``GET /metrics`` (text format 0.0.4):

- ``zhyper_http_requests_total{route, status}``: requests answered, by route and HTTP status;
- ``zhyper_prompt_tokens_total``, ``zhyper_completion_tokens_total``: tokens prefilled / generated;
- ``zhyper_batch_size``: histogram of the rows of every decode step;
- ``zhyper_queue_wait_seconds``: histogram of the time from arrival to admission into the batch;
- ``zhyper_zcache_hits_total``, ``zhyper_zcache_misses_total``: the description -> modulation LRU;
- ``zhyper_requests_failed_total``: requests the engine answered with an error;
- ``zhyper_in_flight`` (HTTP chat requests being answered), ``zhyper_queued``, ``zhyper_active_rows``,
  ``zhyper_draining`` (1 while draining).
"""

from __future__ import annotations

KNOWN_ROUTES = ("/v1/chat/completions", "/v1/models", "/health", "/ready", "/metrics")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def route_label(path: str) -> str:
    """A bounded label for a path (never the raw path: unknown paths would grow the series without end)."""
    if path in KNOWN_ROUTES:
        return path
    return "/v1/models/{id}" if path.startswith("/v1/models/") else "other"


class Metrics:
    """The app's registry; ``engine`` feeds the histograms through its listeners, counters are read at scrape."""

    def __init__(self, engine, ops):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("zhyper_http_requests", "HTTP requests answered, by route and status",
                                ["route", "status"], registry=self.registry)
        self.batch = Histogram("zhyper_batch_size", "rows decoded in each step", buckets=BATCH_BUCKETS,
                               registry=self.registry)
        self.queue_wait = Histogram("zhyper_queue_wait_seconds", "seconds from arrival to admission",
                                    buckets=WAIT_BUCKETS, registry=self.registry)
        self.registry.register(_EngineCollector(engine, ops))
        engine.listeners.append(self._on_engine)

    def _on_engine(self, kind: str, value) -> None:  # on the engine thread
        if kind == "step":
            self.batch.observe(value)
        elif kind == "admit":
            for wait in value:
                self.queue_wait.observe(wait)

    def request(self, path: str, status: int) -> None:
        self.requests.labels(route_label(path), str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _EngineCollector:
    """The engine's and the cache's own counters, read when scraped."""

    def __init__(self, engine, ops):
        self.engine, self.ops = engine, ops

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        e, cache = self.engine, self.engine.cache
        for name, doc, value in (("zhyper_prompt_tokens", "prompt tokens prefilled", e.stats["prompt_tokens"]),
                                 ("zhyper_completion_tokens", "tokens generated", e.stats["tokens"]),
                                 ("zhyper_zcache_hits", "modulation cache hits", cache.hits),
                                 ("zhyper_zcache_misses", "modulation cache misses", cache.misses),
                                 ("zhyper_requests_failed", "requests the engine answered with an error",
                                  e.stats["failed"])):
            yield CounterMetricFamily(name, doc, value=value)
        for name, doc, value in (("zhyper_in_flight", "HTTP chat requests being answered", self.ops.in_flight),
                                 ("zhyper_queued", "requests waiting for a batch slot", e.queued),
                                 ("zhyper_active_rows", "rows in the running batch", e.active),
                                 ("zhyper_draining", "1 while the server drains", int(self.ops.draining))):
            yield GaugeMetricFamily(name, doc, value=value)
