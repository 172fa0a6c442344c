"""Built-in filters.

- ``fresh-metrics``: keep endpoints whose metrics are younger than the staleness bound.
- ``has-capacity``: keep endpoints under the saturation thresholds (queue incl. the EPP's own
  in-flight count, KV-cache usage). YAML: ``scheduler: {filters: [fresh-metrics, has-capacity]}``.
The framework keeps the input when a filter would leave nothing, so filters narrow, never empty.
"""

from __future__ import annotations

from inferstack.gateway.datastore import Endpoint
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.scheduling import Filter, SchedContext, register_filter

__all__ = ["FreshMetricsFilter", "HasCapacityFilter"]


@register_filter
class FreshMetricsFilter(Filter):
    name = "fresh-metrics"

    def filter(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        return [e for e in endpoints if e.fresh(ctx.staleness_s, ctx.now)]


@register_filter
class HasCapacityFilter(Filter):
    name = "has-capacity"

    def filter(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        s = ctx.saturation
        return [e for e in endpoints
                if e.queue() <= s.queue_depth_threshold and e.metrics.kv_usage <= s.kv_cache_util_threshold]
