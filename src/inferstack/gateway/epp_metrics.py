"""Prometheus metrics the EPP exports (own registry; served on ``metrics_port``).

Names are noun + unit; label sets are fixed and small (model, target model, endpoint, outcome).
The model names come from clients, so a ``model``/``target_model`` label is the name only for a
known model, else ``other``: known are the configured names (objectives' models, rewrites' models
and targets; ``set_known_models``) and the names the endpoints serve, learned from their scrapes
(``observe_scrape``: vLLM's ``model_name`` label and the LoRA adapters in use) and their
``/v1/models`` lists (``observe_models``); at most ``MAX_SERVED_MODELS`` of them. Children are
cached per label tuple, after that mapping, so the hot path does two set lookups, one dict lookup
and one increment, and the cache stays bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inferstack.gateway.datastore import Datastore
from inferstack.gateway.kv_events import KvBlockIndex
from inferstack.gateway.scheduling import Scheduler
from inferstack.gateway.settings import EppSettings
from inferstack.gateway.status import (FLOW_FAIRNESS_METRIC, FLOW_QUEUE_METRIC, FLOW_REJECTED_METRIC, FLOW_SERVED_METRIC,
                                       HELD_REQUESTS_METRIC, REQUESTS_METRIC)

__all__ = ["MAX_SERVED_MODELS", "MAX_TENANT_LABELS", "OTHER_MODEL", "OTHER_TENANT", "EppMetrics", "configured_models"]

log = logging.getLogger(__name__)

OTHER_MODEL = "other"  # the label value of every model name that is not known
MAX_SERVED_MODELS = 1000  # bound on names learned from scrapes (a misbehaving server cannot flood)
OTHER_TENANT = "other"  # the tenant label past MAX_TENANT_LABELS (tenants come from a client header)
MAX_TENANT_LABELS = 100
_NO_TENANT = "none"  # the label of requests that name no tenant (no keys, no fairness-id header)

_LATENCY_BUCKETS = (25e-6, 50e-6, 100e-6, 200e-6, 400e-6, 800e-6, 1.6e-3, 3.2e-3, 10e-3, 50e-3)
_HOLD_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)  # a replica's cold start: seconds to minutes
_HOLD_OUTCOMES = ("routed", "timeout", "full", "cancelled")


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
                                  "Waiting requests: scraped, or implied by the EPP's in-flight count.",
                                  labels=["endpoint"])
        in_flight = GaugeMetricFamily("inferstack_epp_endpoint_in_flight_requests",
                                      "Requests the EPP routed to the endpoint that have not ended (with "
                                      "completion tracking; else since the last scrape).", labels=["endpoint"])
        in_flight_tokens = GaugeMetricFamily("inferstack_epp_endpoint_in_flight_prompt_tokens",
                                             "Estimated prompt tokens of those requests.", labels=["endpoint"])
        kv = GaugeMetricFamily("inferstack_epp_endpoint_kv_cache_usage_ratio",
                               "Scraped KV-cache usage of the endpoint (0..1).", labels=["endpoint"])
        served = GaugeMetricFamily("inferstack_epp_endpoint_served_models",
                                   "Models (base + LoRA adapters) the endpoint's /v1/models lists (-1: not "
                                   "known yet; it then counts as serving every model).", labels=["endpoint"])
        pool_queue = pool_ready = 0.0
        for e in self._ds.all():
            if e.ready:
                pool_queue += e.queue()
                pool_ready += 1
            t = e.metrics.scraped_at
            age.add_metric([e.address], now - t if t else -1.0)
            ready.add_metric([e.address], 1.0 if e.ready else 0.0)
            queue.add_metric([e.address], e.queue())
            in_flight.add_metric([e.address], e.in_flight)
            in_flight_tokens.add_metric([e.address], e.in_flight_tokens)
            kv.add_metric([e.address], e.metrics.kv_usage)
            served.add_metric([e.address], -1.0 if e.served_models is None else len(e.served_models))
        yield age
        yield ready
        yield queue
        yield in_flight
        yield in_flight_tokens
        yield kv
        yield served
        yield GaugeMetricFamily("inferstack_epp_pool_queue_requests", "Waiting requests summed over the ready "
                                "endpoints (each as inferstack_epp_endpoint_queue_requests).", value=pool_queue)
        yield GaugeMetricFamily("inferstack_epp_pool_ready_endpoints", "Ready endpoints (last scrape good).",
                                value=pool_ready)
        plug = GaugeMetricFamily("inferstack_epp_plugin_seconds_total",
                                 "Cumulative time spent in each scheduler plugin.", labels=["plugin"])
        calls = GaugeMetricFamily("inferstack_epp_plugin_calls_total",
                                  "Calls of each scheduler plugin.", labels=["plugin"])
        for name, (secs, n) in self._sched.plugin_timings.items():
            plug.add_metric([name], secs)
            calls.add_metric([name], n)
        yield plug
        yield calls


class _WaitingCollector(Collector):
    def __init__(self, lengths: Callable[[], dict[str, int]], label: Callable[[str], str],
                 fairness: Callable[[], float] | None) -> None:
        self._lengths, self._label, self._fairness = lengths, label, fairness

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(FLOW_QUEUE_METRIC, "Requests waiting in the picker per "
                                   "tenant (saturated pool or no ready endpoint).", labels=["tenant"])
        by_label: dict[str, int] = {}
        for tenant, n in self._lengths().items():
            label = self._label(tenant)
            by_label[label] = by_label.get(label, 0) + n
        for label, n in sorted(by_label.items()):
            family.add_metric([label], n)
        yield family
        if self._fairness is not None:
            yield GaugeMetricFamily(FLOW_FAIRNESS_METRIC, "Jain's index over the weighted tokens "
                                    "served in the last 60 s to the tenants that had requests waiting then (1: equal "
                                    "shares; 1/n: one tenant got all).", value=self._fairness())


def configured_models(settings: EppSettings) -> set[str]:
    """The model names the settings mention: objectives' models, rewrites' models and targets."""
    names = {o.model for o in settings.objectives if o.model}
    for rw in settings.rewrites:
        names.add(rw.model)
        names.update(t.model for t in rw.targets)
    return names


class _ByModel:
    """A counter labelled by model alone, whose ``labels(model)`` goes through the bound."""

    def __init__(self, counter: Counter, label: Callable[[str], str]) -> None:
        self._counter, self._label = counter, label

    def labels(self, model: str) -> Counter:
        return self._counter.labels(self._label(model))


class EppMetrics:
    def __init__(self, datastore: Datastore, scheduler: Scheduler, settings: EppSettings | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(REQUESTS_METRIC, "Requests handled by the EPP.",
                                ["model", "target_model", "endpoint", "outcome"], registry=self.registry)
        self.shed = _ByModel(Counter("inferstack_epp_shed_requests", "Sheddable requests refused with 429.",
                                     ["model"], registry=self.registry), self.model_label)
        self.scrapes = Counter("inferstack_epp_scrapes", "Endpoint /metrics scrapes by outcome: ok, error "
                               "(no answer), parse_error (a page the picker cannot use).",
                               ["endpoint", "outcome"], registry=self.registry)
        self.model_polls = Counter("inferstack_epp_model_polls", "Endpoint /v1/models polls by outcome: ok, "
                                   "error (no answer, HTTP error), parse_error (not an OpenAI model list); "
                                   "both failures keep the endpoint's last known models.",
                                   ["endpoint", "outcome"], registry=self.registry)
        self.latency = Histogram("inferstack_epp_scheduling_latency_seconds",
                                 "Time from the EPP receiving a request to its answer.",
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        # where that time goes, per phase: headers (read, auth), parse (the JSON body), decide (the
        # director: objective, quota, admission, schedule), encode (the ext_proc answer); a wait
        # in the queue is not in any (inferstack_epp_hold_seconds has it)
        phases = Histogram("inferstack_epp_phase_seconds", "Time the EPP spends on one request per phase: "
                           "headers, parse, decide, encode.", ["phase"], buckets=_LATENCY_BUCKETS,
                           registry=self.registry)
        self.phase_headers, self.phase_parse, self.phase_decide, self.phase_encode = (
            phases.labels(p) for p in ("headers", "parse", "decide", "encode"))
        # scale from zero: a supervisor starts a replica on held > 0
        self.held = Gauge(HELD_REQUESTS_METRIC, "Requests waiting in the picker now: no endpoint is "
                          "ready (scale from zero), or none has room (flow control).",
                          registry=self.registry)
        self.hold_outcomes = Counter("inferstack_epp_hold_outcomes", "Ends of waits in the picker: routed, timeout "
                                     "(503, or 429 under flow control), full (503 or 429 at once: the queue was "
                                     "full), cancelled (the client left).",
                                     ["outcome"], registry=self.registry)
        self.hold_seconds = Histogram("inferstack_epp_hold_seconds", "Time requests were held, by outcome.",
                                      ["outcome"], buckets=_HOLD_BUCKETS, registry=self.registry)
        # partial request bodies the gRPC server holds (0 when idle: a count that only grows is a leak)
        self.grpc_buffered = Gauge("inferstack_epp_grpc_buffered_bytes",
                                   "Bytes of partial ext_proc messages buffered over all Envoy connections.",
                                   registry=self.registry)
        for outcome in _HOLD_OUTCOMES:  # exported from the start, so a rate() sees the first one
            self.hold_outcomes.labels(outcome)
        # flow control, per tenant (the first MAX_TENANT_LABELS names seen; the rest as "other")
        self._flow_served = Counter(FLOW_SERVED_METRIC, "Weighted tokens routed per "
                                    "tenant, as flow control charges them (prompt tokens estimated x1 + max_tokens "
                                    "or the configured estimate x2).", ["tenant"], registry=self.registry)
        self._flow_rejected = Counter(FLOW_REJECTED_METRIC, "429 answers of flow control per "
                                      "tenant: queue_full, wait_expired.", ["tenant", "reason"], registry=self.registry)
        self._tenant_tokens = Counter("inferstack_epp_tenant_tokens", "Tokens of ended responses per tenant as "
                                      "Envoy reported them: prompt and cached (of the prompt, served from vLLM's prefix "
                                      "cache; vLLM's usage), completion (vLLM's usage, else the stream's text events "
                                      "counted).", ["tenant", "kind"], registry=self.registry)
        self._kv_batches = Counter("inferstack_epp_kv_event_batches", "KV event batches applied per endpoint "
                                   "(live or replayed).", ["endpoint"], registry=self.registry)
        self._kv_gaps = Counter("inferstack_epp_kv_event_gaps", "Gaps in an endpoint's KV event sequence "
                                "(each answered by a replay; one the publisher's buffer no longer covers loses "
                                "blocks until they are stored again).", ["endpoint"], registry=self.registry)
        self._kv_predictions = Counter("inferstack_epp_kv_predictions", "Ended responses whose cached prompt tokens "
                                       "the picker had predicted (x-inferstack-predicted-cached-tokens), by how vLLM's "
                                       "count compared: exact, over (predicted more), under.", ["outcome"],
                                       registry=self.registry)
        self._tenants: set[str] = set()
        self.registry.register(_StateCollector(datastore, scheduler))
        self._children: dict[tuple[str, str, str, str], object] = {}
        self._configured: frozenset[str] = frozenset()
        self._served: set[str] = set()
        self._known: frozenset[str] = frozenset({""})  # "": requests without a model (bad body, GET)
        if settings is not None:
            self.set_known_models(configured_models(settings))

    def tenant_label(self, tenant: str) -> str:
        if not tenant:
            return _NO_TENANT
        if tenant not in self._tenants:
            if len(self._tenants) >= MAX_TENANT_LABELS:
                return OTHER_TENANT
            self._tenants.add(tenant)
        return tenant

    def flow_served(self, tenant: str, weighted_tokens: float) -> None:
        self._flow_served.labels(self.tenant_label(tenant)).inc(weighted_tokens)

    def kv_batch(self, endpoint: str, seq: int) -> None:
        self._kv_batches.labels(endpoint).inc()

    def kv_gap(self, endpoint: str) -> None:
        self._kv_gaps.labels(endpoint).inc()

    def kv_prediction(self, predicted: int, reported: int) -> None:
        outcome = "exact" if predicted == reported else "over" if predicted > reported else "under"
        self._kv_predictions.labels(outcome).inc()

    def watch_kv_index(self, index: KvBlockIndex) -> None:
        """Export the blocks the index holds per endpoint (read at each scrape)."""
        self.registry.register(_KvIndexCollector(index))

    def usage(self, tenant: str, prompt_tokens: int | None, completion_tokens: int,
              cached_tokens: int | None = None) -> None:
        label = self.tenant_label(tenant)
        if prompt_tokens is not None:
            self._tenant_tokens.labels(label, "prompt").inc(prompt_tokens)
        if cached_tokens is not None:
            self._tenant_tokens.labels(label, "cached").inc(cached_tokens)
        self._tenant_tokens.labels(label, "completion").inc(completion_tokens)

    def flow_rejected(self, tenant: str, reason: str) -> None:
        self._flow_rejected.labels(self.tenant_label(tenant), reason).inc()

    def watch_waiting(self, lengths: Callable[[], dict[str, int]], fairness: Callable[[], float] | None = None) -> None:
        """Export the requests waiting per tenant (``lengths()`` read at each scrape) and, with flow
        control, Jain's index over the service of the tenants that waited (``fairness()``)."""
        self.registry.register(_WaitingCollector(lengths, self.tenant_label, fairness))

    def set_known_models(self, names: Iterable[str]) -> None:
        """Replace the configured model names (those learned from scrapes stay known)."""
        self._configured = frozenset(names)
        self._known = self._configured | self._served | {""}

    def observe_scrape(self, address: str, outcome: str, models: frozenset[str]) -> None:
        """Count one scrape of ``address`` and learn the models it serves."""
        self.scrapes.labels(address, outcome).inc()
        self._learn(address, models)

    def observe_models(self, address: str, outcome: str, models: frozenset[str]) -> None:
        """Count one /v1/models poll of ``address`` and learn the models it lists."""
        self.model_polls.labels(address, outcome).inc()
        self._learn(address, models)

    def _learn(self, address: str, models: frozenset[str]) -> None:
        new = models - self._known
        if new:
            room = MAX_SERVED_MODELS - len(self._served)
            if room < len(new):
                log.warning("endpoint %s serves %d model names not yet known, beyond the bound of %d; "
                            "they count as %r", address, len(new), MAX_SERVED_MODELS, OTHER_MODEL)
                new = frozenset(sorted(new)[:max(room, 0)])
            self._served.update(new)
            self._known = self._known | new

    def model_label(self, model: str) -> str:
        return model if model in self._known else OTHER_MODEL

    def count(self, model: str, target: str, endpoint: str, outcome: str) -> None:
        known = self._known
        key = (model if model in known else OTHER_MODEL, target if target in known else OTHER_MODEL,
               endpoint, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(*key)
        child.inc()  # type: ignore[attr-defined]


class _KvIndexCollector(Collector):
    def __init__(self, index: KvBlockIndex) -> None:
        self._index = index

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily("inferstack_epp_kv_blocks", "Blocks each endpoint holds in its prefix cache, as its "
                              "KV events said.", labels=["endpoint"])
        for endpoint in sorted(self._index.endpoints()):
            g.add_metric([endpoint], self._index.size(endpoint))
        yield g
