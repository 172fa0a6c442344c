"""Prometheus metrics the EPP exports (own registry; served on ``metrics_port``).

Names are noun + unit; label sets are fixed and small (model, target model, endpoint, outcome).
Children are cached per label tuple so the hot path does one dict lookup and one increment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inferstack.gateway.datastore import Datastore
from inferstack.gateway.scheduling import Scheduler

__all__ = ["EppMetrics"]

_LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 400e-6, 800e-6, 1.6e-3, 3.2e-3, 10e-3, 50e-3)


class _StateCollector(Collector):
    def __init__(self, datastore: Datastore, scheduler: Scheduler) -> None:
        self._ds, self._sched = datastore, scheduler

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = time.monotonic()
        age = GaugeMetricFamily("inferstack_epp_endpoint_scrape_age_seconds",
                                "Seconds since the endpoint's last successful /metrics scrape (-1: never).",
                                labels=["endpoint"])
        ready = GaugeMetricFamily("inferstack_epp_endpoint_ready", "1 if the endpoint is routable.",
                                  labels=["endpoint"])
        queue = GaugeMetricFamily("inferstack_epp_endpoint_queue_requests",
                                  "Scraped waiting requests plus the EPP's in-flight count.", labels=["endpoint"])
        kv = GaugeMetricFamily("inferstack_epp_endpoint_kv_cache_usage_ratio",
                               "Scraped KV-cache usage of the endpoint (0..1).", labels=["endpoint"])
        for e in self._ds.all():
            t = e.metrics.scraped_at
            age.add_metric([e.address], now - t if t else -1.0)
            ready.add_metric([e.address], 1.0 if e.ready else 0.0)
            queue.add_metric([e.address], e.queue())
            kv.add_metric([e.address], e.metrics.kv_usage)
        yield age
        yield ready
        yield queue
        yield kv
        plug = GaugeMetricFamily("inferstack_epp_plugin_seconds_total",
                                 "Cumulative time spent in each scheduler plugin.", labels=["plugin"])
        calls = GaugeMetricFamily("inferstack_epp_plugin_calls_total",
                                  "Calls of each scheduler plugin.", labels=["plugin"])
        for name, (secs, n) in self._sched.plugin_timings.items():
            plug.add_metric([name], secs)
            calls.add_metric([name], n)
        yield plug
        yield calls


class EppMetrics:
    def __init__(self, datastore: Datastore, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("inferstack_epp_requests", "Requests handled by the EPP.",
                                ["model", "target_model", "endpoint", "outcome"], registry=self.registry)
        self.shed = Counter("inferstack_epp_shed_requests", "Sheddable requests refused with 429.",
                            ["model"], registry=self.registry)
        self.scrapes = Counter("inferstack_epp_scrapes", "Endpoint /metrics scrapes.",
                               ["endpoint", "outcome"], registry=self.registry)
        self.latency = Histogram("inferstack_epp_scheduling_latency_seconds",
                                 "Time from the EPP receiving a request to its answer.",
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_StateCollector(datastore, scheduler))
        self._children: dict[tuple[str, str, str, str], object] = {}

    def count(self, model: str, target: str, endpoint: str, outcome: str) -> None:
        key = (model, target, endpoint, outcome)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 10_000:  # bound label cardinality from arbitrary model names
                key = ("other", "other", endpoint, outcome)
            child = self._children[key] = self.requests.labels(*key)
        child.inc()  # type: ignore[attr-defined]
