"""Built-in load scorers. Each returns one score in [0, 1] per endpoint (higher is better).

- ``queue``    (consumes num_requests_waiting + EPP in-flight):  max(0, 1 - q / max_queue),
               ``max_queue`` a parameter (default 8). An absolute scale, not min-max: one extra
               in-flight request costs 1/max_queue, so it cannot outweigh a strong prefix match.
- ``running``  (consumes num_requests_running + EPP in-flight):  same min-max formula.
- ``kv-cache`` (consumes kv_cache_usage_perc):                   1 - usage.
- ``lora``     (consumes lora_requests_info): 1.0 adapter running, 0.8 adapter waiting,
               0.5 a free adapter slot, 0.0 otherwise; 1.0 everywhere for a model no endpoint
               serves as an adapter and that has no LoRA slots (base-model requests).
YAML: ``scorers: [{type: queue, weight: 2, parameters: {max_queue: 8}}, {type: kv-cache, weight: 1}]``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from inferstack.gateway.datastore import Endpoint
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.scheduling import SchedContext, Scorer, register_scorer
from inferstack.gateway.settings import SchedulerSettings

__all__ = ["KvCacheScorer", "LoraAffinityScorer", "QueueParams", "QueueScorer", "RunningScorer", "min_max_inverse"]


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
    consumes = ("vllm:num_requests_waiting",)

    def __init__(self, params: QueueParams, scheduler_settings: SchedulerSettings) -> None:  # type: ignore[override]
        super().__init__(params, scheduler_settings)
        self._max = params.max_queue

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        m = self._max
        return [max(0.0, 1.0 - (e.metrics.waiting + e.in_flight) / m) for e in endpoints]


@register_scorer
class RunningScorer(Scorer):
    name = "running"
    consumes = ("vllm:num_requests_running",)

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        return min_max_inverse([e.metrics.running + e.in_flight for e in endpoints])


@register_scorer
class KvCacheScorer(Scorer):
    name = "kv-cache"
    consumes = ("vllm:kv_cache_usage_perc",)

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        return [1.0 - e.metrics.kv_usage for e in endpoints]


@register_scorer
class LoraAffinityScorer(Scorer):
    name = "lora"
    consumes = ("vllm:lora_requests_info",)

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        model = request.target_model
        out = []
        for e in endpoints:
            m = e.metrics
            if model in m.active_loras:
                out.append(1.0)
            elif model in m.waiting_loras:
                out.append(0.8)
            elif len(m.active_loras | m.waiting_loras) < m.max_loras:
                out.append(0.5)
            else:
                out.append(0.0)
        if not any(out):  # no endpoint knows this model as an adapter nor has slots: base model
            return [1.0] * len(endpoints)
        return out
