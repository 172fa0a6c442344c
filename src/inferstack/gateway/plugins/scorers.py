"""Built-in load scorers. Each returns one score in [0, 1] per endpoint (higher is better).

- ``queue``    (consumes num_requests_waiting + EPP in-flight):  max(0, 1 - q / max_queue),
               ``max_queue`` a parameter (default 8). An absolute scale, not min-max: one extra
               in-flight request costs 1/max_queue, so it cannot outweigh a strong prefix match.
- ``load``     (consumes num_requests_waiting + running, or the EPP's completion-tracked
               in-flight count when larger): max(0, 1 - outstanding / max_load) (default 16).
               On CPU (and any engine batching everything it is sent) requests run rather than
               wait, so outstanding requests are the load signal, not the waiting queue. With
               stale metrics but completion tracking, the EPP's own count alone.
- ``running``  (consumes num_requests_running + EPP in-flight):  same min-max formula.
- ``kv-cache`` (consumes kv_cache_usage_perc):                   1 - usage.
- ``precise-prefix`` (consumes the replicas' KV events, gateway/kv_events.py): the share of the
               request's full blocks (tokenized as the engine does) that the endpoint holds, from
               the first block on, as its KV events said, continued by the blocks of requests sent
               there in the last ``pending_s`` (30 s) that no event has reported yet (a prefill can
               wait seconds: without them, requests sharing a new prefix would spread and compute
               it on every replica). Needs ``kv_events`` on (the local stack's ``gateway.epp.kv_events``).
               Weigh it 2 beside load scorers at 1: a request then leaves its cached replica only
               when that one is saturated and another nearly idle (docs/gateway.md measures it).
- ``no-hit-lru`` (consumes the prefix scorer's best match): for a request no endpoint has cached
               (best match < ``min_match``), 1.0 for the endpoint that least recently got such a
               cold request down to 0.0 for the most recent, so new prefixes spread over the
               replicas (llm-d's no-hit LRU); 1.0 everywhere for a warm request. Needs ``prefix``
               or ``precise-prefix`` listed before it.
Stale metrics are unknown, not idle: a scorer reading scraped metrics scores such an endpoint 0.
- ``lora``     (consumes lora_requests_info, and the adapters /v1/models lists): for a LoRA
               adapter, 1.0 where it is running (in a batch slot already), 0.8 where a slot is
               free (fewer adapters running or waiting than max_lora, or no lora_requests_info
               yet: vLLM exports it after a first adapter request), 0.6 where it only waits,
               0.0 otherwise (or stale metrics); 1.0 everywhere for a base model (a model no
               endpoint lists as an adapter nor has in flight as one). The EPP has already kept
               only the endpoints that hold the adapter (``policy.serving``), so this orders them.
YAML: ``scorers: [{type: queue, weight: 2, parameters: {max_queue: 8}}, {type: kv-cache, weight: 1}]``.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict

from pydantic import BaseModel, ConfigDict, Field

from inferstack.gateway.datastore import Endpoint
from inferstack.gateway.kv_events import KvBlockIndex
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.scheduling import SchedContext, Scorer, register_scorer
from inferstack.gateway.settings import SchedulerSettings
from inferstack.wire import VllmMetric

__all__ = ["KvCacheScorer", "LoadParams", "LoadScorer", "LoraAffinityScorer", "NoHitLruParams", "NoHitLruScorer",
           "PrecisePrefixScorer", "QueueParams", "QueueScorer", "RunningScorer", "min_max_inverse"]


def min_max_inverse(values: list[float]) -> list[float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1.0] * len(values)
    span = hi - lo
    return [(hi - v) / span for v in values]


class QueueParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_queue: float = Field(default=8.0, gt=0, description="Queue length that scores 0.")


@register_scorer
class QueueScorer(Scorer):
    name = "queue"
    Params = QueueParams
    consumes = (VllmMetric.WAITING.value,)

    def __init__(self, params: QueueParams, scheduler_settings: SchedulerSettings) -> None:  # type: ignore[override]
        super().__init__(params, scheduler_settings)
        self._max = params.max_queue

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        m, now, st = self._max, ctx.now, ctx.staleness_s
        return [max(0.0, 1.0 - e.queue() / m) if e.fresh(st, now) else 0.0 for e in endpoints]


class LoadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_load: float = Field(default=16.0, gt=0, description="Outstanding requests that score 0.")


@register_scorer
class LoadScorer(Scorer):
    name = "load"
    Params = LoadParams
    consumes = (VllmMetric.WAITING.value, VllmMetric.RUNNING.value)

    def __init__(self, params: LoadParams, scheduler_settings: SchedulerSettings) -> None:  # type: ignore[override]
        super().__init__(params, scheduler_settings)
        self._max = params.max_load

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        m, now, st = self._max, ctx.now, ctx.staleness_s
        out = []
        for e in endpoints:
            if e.fresh(st, now):
                load = e.load()
            elif e.tracked:  # our own completion-tracked count is never stale
                load = float(e.in_flight)
            else:
                out.append(0.0)
                continue
            out.append(max(0.0, 1.0 - load / m))
        return out


class NoHitLruParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_match: float = Field(default=0.1, ge=0, le=1, description="Best prefix match below which a "
                             "request counts as cold (cached nowhere).")


@register_scorer
class NoHitLruScorer(Scorer):
    name = "no-hit-lru"
    Params = NoHitLruParams
    requires = ("prefix|precise-prefix",)

    def __init__(self, params: NoHitLruParams, scheduler_settings: SchedulerSettings) -> None:  # type: ignore[override]
        super().__init__(params, scheduler_settings)
        self._min = params.min_match
        self._last_cold: dict[str, int] = {}  # address -> sequence number of its last cold pick
        self._seq = 0

    def _cold(self, request: InferenceRequest) -> bool:
        return request.prefix_best_match is not None and request.prefix_best_match < self._min

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        n = len(endpoints)
        if n < 2 or not self._cold(request):
            return [1.0] * n
        last = [self._last_cold.get(e.address, -1) for e in endpoints]
        ordered = sorted(last)
        # 1 - the share of the other endpoints whose last cold request is older (ties score equal)
        return [1.0 - bisect.bisect_left(ordered, v) / (n - 1) for v in last]

    def on_pick(self, ctx: SchedContext, request: InferenceRequest, endpoint: Endpoint) -> None:
        if self._cold(request):
            self._seq += 1
            self._last_cold[endpoint.address] = self._seq

    def forget(self, address: str) -> None:
        self._last_cold.pop(address, None)


class PrecisePrefixParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pending_s: float = Field(default=30.0, ge=0, le=600, description="A routed request's blocks count as held by "
                             "its endpoint for this long before its KV events report them (its prefill may wait "
                             "and take seconds): requests sharing its prefix meanwhile follow it instead of "
                             "computing the prefix on another replica. 0: only what the events report.")


_PENDING_KEPT = 65_536  # pending block keys per endpoint, oldest dropped first


@register_scorer
class PrecisePrefixScorer(Scorer):
    name = "precise-prefix"
    Params = PrecisePrefixParams

    def __init__(self, params: PrecisePrefixParams, scheduler_settings: SchedulerSettings) -> None:  # type: ignore[override]
        super().__init__(params, scheduler_settings)
        self.index: KvBlockIndex | None = None  # the picker's, set once it follows KV events
        self._pending_s = params.pending_s
        self._pending: dict[str, OrderedDict[int, float]] = {}  # address -> block key -> until (monotonic)

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        keys = request.block_keys
        if not keys or self.index is None:
            request.prefix_best_match = 0.0
            return [0.0] * len(endpoints)
        request.held_blocks = {e.address: self.held(e.address, keys, ctx.now) for e in endpoints}
        out = [request.held_blocks[e.address] / len(keys) for e in endpoints]
        request.prefix_best_match = max(out)
        return out

    def held(self, address: str, keys: list[int], now: float) -> int:
        """The run of ``keys`` from the first that ``address`` holds: reported by its events, then
        pending (sent there, not reported yet)."""
        assert self.index is not None
        n = self.index.cached_blocks(address, keys)
        pending = self._pending.get(address)
        if pending:
            while n < len(keys) and pending.get(keys[n], 0.0) > now:
                n += 1
        return n

    def on_pick(self, ctx: SchedContext, request: InferenceRequest, endpoint: Endpoint) -> None:
        if not self._pending_s or not request.block_keys:
            return
        pending = self._pending.setdefault(endpoint.address, OrderedDict())
        until = ctx.now + self._pending_s
        for key in request.block_keys:
            pending[key] = until
            pending.move_to_end(key)
        while len(pending) > _PENDING_KEPT:
            pending.popitem(last=False)

    def forget(self, address: str) -> None:
        self._pending.pop(address, None)


@register_scorer
class RunningScorer(Scorer):
    name = "running"
    consumes = (VllmMetric.RUNNING.value,)

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        scores = min_max_inverse([e.metrics.running + e.in_flight for e in endpoints])
        return [s if e.fresh(ctx.staleness_s, ctx.now) else 0.0 for s, e in zip(scores, endpoints)]


@register_scorer
class KvCacheScorer(Scorer):
    name = "kv-cache"
    consumes = (VllmMetric.KV_CACHE_USAGE.value,)

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        return [1.0 - e.metrics.kv_usage if e.fresh(ctx.staleness_s, ctx.now) else 0.0 for e in endpoints]


@register_scorer
class LoraAffinityScorer(Scorer):
    name = "lora"
    consumes = (VllmMetric.LORA_REQUESTS_INFO.value,)

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        model = request.target_model
        for e in endpoints:
            m = e.metrics
            if model in e.served_adapters or model in m.active_loras or model in m.waiting_loras:
                break
        else:  # a base model: adapter slots do not matter
            return [1.0] * len(endpoints)
        now, st = ctx.now, ctx.staleness_s
        out = []
        for e in endpoints:
            m = e.metrics
            if not e.fresh(st, now):
                out.append(0.0)
            elif model in m.active_loras:
                out.append(1.0)
            elif m.max_loras == 0 or len(m.active_loras | m.waiting_loras) < m.max_loras:
                out.append(0.8)  # max_loras 0: vLLM shows lora_requests_info only after a first adapter request
            elif model in m.waiting_loras:
                out.append(0.6)
            else:
                out.append(0.0)
        return out
