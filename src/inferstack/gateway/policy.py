"""Request policy before scheduling: model rewrites (weighted splits), priorities, saturation.

- ``Rewrites.apply(model)`` -> target model, drawn with the configured weights
  (InferenceModelRewrite semantics); models without a rewrite pass through unchanged.
- ``Objectives.priority(model, target, objective)`` -> int; < 0 means sheddable (InferenceObjective
  semantics); ``objective`` is the x-gateway-inference-objective header's value.
- ``serving(model, endpoints)``: the endpoints able to serve ``model`` (its ``/v1/models`` lists it,
  or its list is not known yet); ``endpoints`` itself when all are, ``[]`` when none is.
- ``is_saturated(endpoints, ...)``: True when no endpoint has capacity: fresh metrics, queue
  (waiting + the EPP's in-flight) <= threshold and KV usage <= threshold. Stale or missing
  metrics count as no capacity ("unknown" is not "idle").
Invariants: cumulative weights are precomputed; nothing here does I/O.
"""

from __future__ import annotations

import bisect
import itertools
import random

from inferstack.gateway.datastore import Endpoint
from inferstack.gateway.settings import ObjectiveSettings, RewriteSettings, SaturationSettings

__all__ = ["Objectives", "Rewrites", "has_capacity", "is_saturated", "serving"]


class Rewrites:
    def __init__(self, rewrites: list[RewriteSettings], rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._table: dict[str, tuple[list[str], list[int]]] = {}
        for rw in rewrites:
            targets = [t for t in rw.targets if t.weight > 0]
            cum = list(itertools.accumulate(t.weight for t in targets))
            self._table[rw.model] = ([t.model for t in targets], cum)

    def apply(self, model: str) -> str:
        entry = self._table.get(model)
        if entry is None:
            return model
        names, cum = entry
        if len(names) == 1:
            return names[0]
        return names[bisect.bisect_right(cum, self._rng.randrange(cum[-1]))]


class Objectives:
    """Priority of a request: the objective its header names, else the one of its model (as asked,
    then as rewritten), else 0. An unknown objective name falls back to the model's."""

    def __init__(self, objectives: list[ObjectiveSettings]) -> None:
        self._by_name = {o.name: o.priority for o in objectives if o.name}
        self._by_model = {o.model: o.priority for o in objectives if o.model}

    def priority(self, model: str, target_model: str | None = None, objective: str = "") -> int:
        if objective and objective in self._by_name:
            return self._by_name[objective]
        if model in self._by_model:
            return self._by_model[model]
        if target_model is not None:
            return self._by_model.get(target_model, 0)
        return 0


def serving(model: str, endpoints: list[Endpoint]) -> list[Endpoint]:
    """The endpoints that serve ``model`` or whose model list is unknown. The usual case (every
    endpoint able) returns ``endpoints`` itself: one set lookup per endpoint, nothing allocated."""
    for e in endpoints:
        s = e.served_models
        if s is not None and model not in s:
            break
    else:
        return endpoints
    return [e for e in endpoints if e.serves(model)]


def has_capacity(e: Endpoint, s: SaturationSettings, now: float) -> bool:
    return (e.fresh(s.metrics_staleness_ms / 1000.0, now)
            and e.queue() <= s.queue_depth_threshold
            and e.metrics.kv_usage <= s.kv_cache_util_threshold)


def is_saturated(endpoints: list[Endpoint], s: SaturationSettings, now: float) -> bool:
    return not any(has_capacity(e, s, now) for e in endpoints)
