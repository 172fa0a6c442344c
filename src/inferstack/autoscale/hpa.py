"""The Kubernetes HorizontalPodAutoscaler algorithm, as a pure function of its inputs and time.

What the upstream controller does (``pkg/controller/podautoscaler``: ``replica_calculator.go``,
``horizontal.go``; Kubernetes docs "Horizontal Pod Autoscaling", "Algorithm details" and
"Configurable scaling behavior"), restated here for per-pod metrics with an AverageValue target
(``Pods`` metrics: the vLLM gauges) and pool-level metrics with a Value target (``External``
metrics: the endpoint picker's pool averages):

1. Per metric, a proposal (``replicas_for_pods_metric`` / ``replicas_for_pool_metric``):
   ``usage`` = the average of the pods' values, in integer milli-units as the controller computes
   it; ``ratio = usage / target``; within the tolerance (``1 - down <= ratio <= 1 + up``, 0.1
   each) the proposal is the current count, else ``ceil(ratio * pods with a value)``. Pods being
   deleted or failed are ignored; pending pods are "unready"; running pods without a value are
   "missing". With missing or (on a scale-up) unready pods the average is recomputed with missing
   pods at the target (scale-down) or 0 (scale-up) and unready pods at 0; if the new ratio is
   within the tolerance or reverses the direction, the proposal is the current count.
2. Over metrics (``desired_from_metrics``): the largest proposal; no proposal at all, or an invalid
   metric while the valid ones say "scale down", means no scaling this period.
3. Normalisation (``Autoscaler.decide``), with ``behavior`` (autoscaling/v2): the recommendation is
   recorded, then stabilised (at least the minimum over the scale-up window, at most the maximum
   over the scale-down window, of the recorded recommendations), then limited by the rate policies
   (Pods/Percent per ``period_s``, counted from the replica count at the start of each period via
   the scale-event history; ``select_policy`` Max/Min/Disabled), then by min/max replicas. Without
   ``behavior`` (an HPA that omits it): the legacy path, the maximum recommendation over the last
   300 s (the controller's ``--horizontal-pod-autoscaler-downscale-stabilization``), a scale-up
   limit of ``max(2 x current, 4)``, then min/max.
4. Outside the metrics: current > max -> max; current < min -> min; current == 0 with min > 0 ->
   autoscaling disabled (the target was scaled to zero by hand).

Invariants: nothing here reads a clock, a process or the network: ``now`` (seconds, any monotonic
origin) and the pods' states are inputs; ``Autoscaler`` is the only state (the controller's
recommendations and scale events for one HPA). Facts come from the upstream sources above; the
code is our own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DEFAULT_DOWNSCALE_STABILIZATION_S",
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "DEFAULT_TOLERANCE",
    "Autoscaler",
    "Behavior",
    "Decision",
    "HPASpec",
    "MetricProposal",
    "MetricSpec",
    "PodSample",
    "ScaleEvent",
    "ScalingPolicy",
    "ScalingRules",
    "desired_from_metrics",
    "replicas_for_pods_metric",
    "replicas_for_pool_metric",
    "scale_down_limit",
    "scale_up_limit",
]

DEFAULT_TOLERANCE = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance
DEFAULT_DOWNSCALE_STABILIZATION_S = 300.0  # --horizontal-pod-autoscaler-downscale-stabilization
_LEGACY_SCALE_UP_FACTOR = 2.0  # scaleUpLimitFactor: without behavior, at most double ...
_LEGACY_SCALE_UP_MINIMUM = 4.0  # ... or 4 (scaleUpLimitMinimum), whichever is larger

PodPhase = Literal["pending", "running", "failed"]


@dataclass(frozen=True)
class PodSample:
    """One pod (replica) as the controller sees it in one sync period.

    ``phase`` pending = scheduled or starting (counts as unready); running = started (its values
    count when present, whether or not it passed its readiness probe, as upstream does for
    non-CPU metrics); failed = ignored. ``deleting`` (a deletion timestamp: draining) = ignored.
    ``ready`` (Running and Ready) only matters to pool metrics, which scale by the ready count.
    ``metrics`` maps a metric name to this pod's value; a name that is absent is a missing value.
    """

    name: str
    phase: PodPhase = "running"
    ready: bool = True
    deleting: bool = False
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """One metric of an HPA: ``kind`` pods = per-pod values averaged against an AverageValue
    target; pool = one pool-level value against a Value target (scales by ready pods)."""

    name: str
    target: float
    kind: Literal["pods", "pool"] = "pods"

    def __post_init__(self) -> None:
        if not self.target > 0:
            raise ValueError(f"metric {self.name!r} target has value {self.target}; must be > 0")


@dataclass(frozen=True)
class ScalingPolicy:
    """At most ``value`` pods (Pods) or ``value`` percent (Percent) per ``period_s`` seconds."""

    type: Literal["Pods", "Percent"]
    value: int
    period_s: int


@dataclass(frozen=True)
class ScalingRules:
    """One direction of ``behavior``: stabilization window, rate policies, how to choose among
    them, and (Kubernetes 1.33+, alpha) a per-direction tolerance."""

    stabilization_window_s: float
    policies: tuple[ScalingPolicy, ...]
    select_policy: Literal["Max", "Min", "Disabled"] = "Max"
    tolerance: float | None = None  # None: the controller-wide tolerance

    @property
    def longest_period_s(self) -> int:
        return max((p.period_s for p in self.policies), default=0)


# The API's defaults for a behavior section (pkg/apis/autoscaling/v2 defaults; documented under
# "Default Behavior"): scale up at once by 4 pods or 100% per 15 s, whichever is more; scale down to
# the recommendation (100% per 15 s) after a 300 s window.
DEFAULT_SCALE_UP = ScalingRules(
    stabilization_window_s=0,
    policies=(ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)),
    select_policy="Max",
)
DEFAULT_SCALE_DOWN = ScalingRules(
    stabilization_window_s=DEFAULT_DOWNSCALE_STABILIZATION_S,
    policies=(ScalingPolicy("Percent", 100, 15),),
    select_policy="Max",
)


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN


@dataclass(frozen=True)
class HPASpec:
    """What one HorizontalPodAutoscaler says. ``behavior`` None = an HPA without ``behavior``
    (the controller's legacy normalisation, not the documented defaults' exact arithmetic)."""

    min_replicas: int
    max_replicas: int
    metrics: tuple[MetricSpec, ...]
    behavior: Behavior | None = None
    tolerance: float = DEFAULT_TOLERANCE
    downscale_stabilization_s: float = DEFAULT_DOWNSCALE_STABILIZATION_S  # legacy path only

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < 1:
            raise ValueError(f"min_replicas {self.min_replicas} / max_replicas {self.max_replicas}: "
                             "must be >= 0 / >= 1")
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) cannot exceed max_replicas "
                             f"({self.max_replicas})")
        if not self.metrics:
            raise ValueError("an HPA needs at least one metric")


@dataclass(frozen=True)
class MetricProposal:
    """One metric's answer: a replica count, or why there is none (``error``)."""

    metric: MetricSpec
    replicas: int | None
    usage: float | None = None  # the average (pods) or value (pool) the ratio was computed from
    ratio: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ScaleEvent:
    at: float
    change: int  # replicas added (scale-up history) or removed (scale-down history), > 0


@dataclass(frozen=True)
class Decision:
    """One sync period: what the metrics asked for and what the controller would set."""

    at: float
    current_replicas: int
    desired_replicas: int  # what to scale to (== current when nothing changes)
    metric_replicas: int | None  # the largest proposal (None: no valid metric / no-scale rule)
    stabilized_replicas: int | None
    reason: str  # DesiredWithinRange, ScaleUpLimit, ScaleDownLimit, TooManyReplicas, TooFewReplicas,
    #              ScaleUpStabilized, ScaleDownStabilized, ScalingDisabled, InvalidMetrics, ...
    proposals: tuple[MetricProposal, ...] = ()

    @property
    def rescale(self) -> bool:
        return self.desired_replicas != self.current_replicas

    def message(self) -> str:
        """One line for logs and status: 'scaled 1 -> 2: vllm:num_requests_waiting avg 7.5 > target 3'."""
        head = (f"scaled {self.current_replicas} -> {self.desired_replicas}" if self.rescale
                else f"kept {self.current_replicas}")
        parts = []
        for p in self.proposals:
            if p.error is not None:
                parts.append(f"{p.metric.name}: {p.error}")
                continue
            what = "avg" if p.metric.kind == "pods" else "value"
            sign = ">" if (p.ratio or 0) > 1 else ("<" if (p.ratio or 0) < 1 else "=")
            parts.append(f"{p.metric.name} {what} {_fmt(p.usage)} {sign} target {_fmt(p.metric.target)}")
        tail = "; ".join(parts)
        if self.reason not in ("DesiredWithinRange", "ReadyForNewScale"):
            tail = f"{tail} ({self.reason})" if tail else self.reason
        return f"{head}: {tail}" if tail else head


def _fmt(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:g}" if abs(x) >= 0.01 or x == 0 else f"{x:.3g}"


def _milli(x: float) -> int:
    """A value as the controller sees it: a resource.Quantity's MilliValue (rounded up)."""
    return math.ceil(round(x * 1000.0, 6))


def _within(ratio: float, up: float, down: float) -> bool:
    return (1.0 - down) <= ratio <= (1.0 + up)


def _average_ratio(values: Iterable[int], target_milli: int) -> tuple[float, int]:
    vals = list(values)
    usage = sum(vals) // len(vals)  # integer division, as metricsclient.GetMetricUsageRatio
    return usage / target_milli, usage


def replicas_for_pods_metric(
    current_replicas: int,
    metric: MetricSpec,
    pods: Sequence[PodSample],
    *,
    tolerance_up: float = DEFAULT_TOLERANCE,
    tolerance_down: float = DEFAULT_TOLERANCE,
) -> MetricProposal:
    """A per-pod metric with an AverageValue target (the replica calculator's plain-metric path)."""
    if not pods:
        return MetricProposal(metric, None, error="no pods returned by selector")
    target = _milli(metric.target)
    values: dict[str, int] = {}
    ready = 0
    unready: list[str] = []
    missing: list[str] = []
    for pod in pods:
        if pod.deleting or pod.phase == "failed":
            continue  # ignored
        if pod.phase == "pending":
            unready.append(pod.name)
            continue
        if metric.name not in pod.metrics:
            missing.append(pod.name)
            continue
        values[pod.name] = _milli(pod.metrics[metric.name])
        ready += 1
    if not values:
        return MetricProposal(metric, None, error="no values for targeted pods (pods might be unready)")
    ratio, usage = _average_ratio(values.values(), target)
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        if _within(ratio, tolerance_up, tolerance_down):
            return MetricProposal(metric, current_replicas, usage / 1000.0, ratio)
        return MetricProposal(metric, math.ceil(ratio * ready), usage / 1000.0, ratio)
    adjusted = dict(values)
    if missing:
        if ratio < 1.0:
            adjusted.update({name: target for name in missing})  # scale-down: at the target
        elif ratio > 1.0:
            adjusted.update({name: 0 for name in missing})  # scale-up: idle
    if scale_up_with_unready:
        adjusted.update({name: 0 for name in unready})
    new_ratio, _ = _average_ratio(adjusted.values(), target)
    if (_within(new_ratio, tolerance_up, tolerance_down) or (ratio < 1.0 < new_ratio)
            or (ratio > 1.0 > new_ratio)):
        return MetricProposal(metric, current_replicas, usage / 1000.0, ratio)
    proposal = math.ceil(new_ratio * len(adjusted))
    if (new_ratio < 1.0 and proposal > current_replicas) or (new_ratio > 1.0 and proposal < current_replicas):
        return MetricProposal(metric, current_replicas, usage / 1000.0, ratio)
    return MetricProposal(metric, proposal, usage / 1000.0, ratio)


def replicas_for_pool_metric(
    current_replicas: int,
    metric: MetricSpec,
    value: float | None,
    ready_pods: int,
    *,
    tolerance_up: float = DEFAULT_TOLERANCE,
    tolerance_down: float = DEFAULT_TOLERANCE,
) -> MetricProposal:
    """A pool-level value with a Value target (an External or Object metric): the ratio scales the
    number of Running and Ready pods; at 0 replicas it is ``ceil(ratio)`` (scale from zero)."""
    if value is None:
        return MetricProposal(metric, None, error="no value for the pool metric")
    usage = _milli(value)
    ratio = usage / _milli(metric.target)
    if current_replicas == 0:
        return MetricProposal(metric, math.ceil(ratio), usage / 1000.0, ratio)
    if _within(ratio, tolerance_up, tolerance_down):
        return MetricProposal(metric, current_replicas, usage / 1000.0, ratio)
    return MetricProposal(metric, math.ceil(ratio * ready_pods), usage / 1000.0, ratio)


def desired_from_metrics(
    spec: HPASpec,
    current_replicas: int,
    pods: Sequence[PodSample],
    pool_values: Mapping[str, float] | None = None,
) -> tuple[int | None, tuple[MetricProposal, ...]]:
    """The largest proposal over the metrics, or None when the controller would not scale: every
    metric invalid, or some invalid while the valid ones propose fewer replicas than now."""
    up, down = _tolerances(spec)
    pool_values = pool_values or {}
    ready = sum(1 for p in pods if p.phase == "running" and p.ready)
    proposals = []
    for metric in spec.metrics:
        if metric.kind == "pods":
            proposals.append(replicas_for_pods_metric(
                current_replicas, metric, pods, tolerance_up=up, tolerance_down=down))
        else:
            proposals.append(replicas_for_pool_metric(
                current_replicas, metric, pool_values.get(metric.name), ready,
                tolerance_up=up, tolerance_down=down))
    valid = [p.replicas for p in proposals if p.replicas is not None]
    invalid = len(proposals) - len(valid)
    replicas = max(valid) if valid else 0
    if invalid >= len(proposals) or (invalid > 0 and replicas < current_replicas):
        return None, tuple(proposals)
    return replicas, tuple(proposals)


def _tolerances(spec: HPASpec) -> tuple[float, float]:
    b = spec.behavior
    up = b.scale_up.tolerance if b and b.scale_up.tolerance is not None else spec.tolerance
    down = b.scale_down.tolerance if b and b.scale_down.tolerance is not None else spec.tolerance
    return up, down


def _changed_within(period_s: int, events: Sequence[ScaleEvent], now: float) -> int:
    cutoff = now - period_s
    return sum(e.change for e in events if e.at > cutoff)


def scale_up_limit(current: int, up_events: Sequence[ScaleEvent], down_events: Sequence[ScaleEvent],
                   rules: ScalingRules, now: float) -> int:
    """The most replicas the scale-up policies allow now (before min/max)."""
    if rules.select_policy == "Disabled":
        return current
    pick = min if rules.select_policy == "Min" else max
    result: int | None = None
    for policy in rules.policies:
        start = (current - _changed_within(policy.period_s, up_events, now)
                 + _changed_within(policy.period_s, down_events, now))
        if policy.type == "Pods":
            proposed = start + policy.value
        else:  # rounded up, or a small Percent could never add a pod
            proposed = math.ceil(start * (1 + policy.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def scale_down_limit(current: int, up_events: Sequence[ScaleEvent], down_events: Sequence[ScaleEvent],
                     rules: ScalingRules, now: float) -> int:
    """The fewest replicas the scale-down policies allow now (before min/max)."""
    if rules.select_policy == "Disabled":
        return current
    # Max picks the biggest change, i.e. the lowest count; Min the smallest change.
    pick = max if rules.select_policy == "Min" else min
    result: int | None = None
    for policy in rules.policies:
        start = (current - _changed_within(policy.period_s, up_events, now)
                 + _changed_within(policy.period_s, down_events, now))
        if policy.type == "Pods":
            proposed = start - policy.value
        else:  # truncated: the pods removed round up
            proposed = int(start * (1 - policy.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


@dataclass
class _Recommendation:
    at: float
    replicas: int


class Autoscaler:
    """The controller's memory for one HPA: recommendations and scale events, with time passed in.

    ``decide(now, current, pods, pool_values)`` is one sync period (it records the recommendation
    as upstream does); ``record_scale(now, previous, new)`` records a scale that was applied (call
    it only when the scale succeeded); ``step`` does both, for callers that always apply.
    """

    def __init__(self, spec: HPASpec) -> None:
        self.spec = spec
        self._recommendations: list[_Recommendation] = []
        self.scale_up_events: list[ScaleEvent] = []
        self.scale_down_events: list[ScaleEvent] = []

    def decide(self, now: float, current_replicas: int, pods: Sequence[PodSample],
               pool_values: Mapping[str, float] | None = None) -> Decision:
        spec = self.spec
        if not self._recommendations:
            self._recommendations.append(_Recommendation(now, current_replicas))
        if current_replicas == 0 and spec.min_replicas != 0:
            return Decision(now, 0, 0, None, None, "ScalingDisabled")
        if current_replicas > spec.max_replicas:
            return Decision(now, current_replicas, spec.max_replicas, None, None, "TooManyReplicas")
        if current_replicas < spec.min_replicas:
            return Decision(now, current_replicas, spec.min_replicas, None, None, "TooFewReplicas")
        wanted, proposals = desired_from_metrics(spec, current_replicas, pods, pool_values)
        if wanted is None:
            return Decision(now, current_replicas, current_replicas, None, None, "InvalidMetrics", proposals)
        if spec.behavior is None:
            stabilized = self._stabilize_legacy(now, wanted)
            desired, reason = self._limit_legacy(current_replicas, stabilized)
        else:
            stabilized, reason = self._stabilize(now, current_replicas, wanted)
            desired, limit_reason = self._limit(now, current_replicas, stabilized)
            if desired != stabilized or stabilized == wanted:
                reason = limit_reason
        return Decision(now, current_replicas, desired, wanted, stabilized, reason, proposals)

    def record_scale(self, now: float, previous: int, new: int) -> None:
        """Record an applied scale in the history the rate policies read (behavior only)."""
        behavior = self.spec.behavior
        if behavior is None or new == previous:
            return
        if new > previous:
            self.scale_up_events = _store(self.scale_up_events, ScaleEvent(now, new - previous),
                                          behavior.scale_up.longest_period_s, now)
        else:
            self.scale_down_events = _store(self.scale_down_events, ScaleEvent(now, previous - new),
                                            behavior.scale_down.longest_period_s, now)

    def step(self, now: float, current_replicas: int, pods: Sequence[PodSample],
             pool_values: Mapping[str, float] | None = None) -> Decision:
        decision = self.decide(now, current_replicas, pods, pool_values)
        if decision.rescale:
            self.record_scale(now, decision.current_replicas, decision.desired_replicas)
        return decision

    @property
    def recommendations(self) -> list[tuple[float, int]]:
        """(time, replicas) of every recorded recommendation, oldest slot first."""
        return [(r.at, r.replicas) for r in self._recommendations]

    def with_spec(self, spec: HPASpec) -> Autoscaler:
        """A copy with a new spec and the same history (a policy edited while running)."""
        copy = Autoscaler(spec)
        copy._recommendations = [_Recommendation(r.at, r.replicas) for r in self._recommendations]
        copy.scale_up_events = list(self.scale_up_events)
        copy.scale_down_events = list(self.scale_down_events)
        return copy

    # -- with behavior ---------------------------------------------------------------------
    def _stabilize(self, now: float, current: int, wanted: int) -> tuple[int, str]:
        assert self.spec.behavior is not None
        up_window = self.spec.behavior.scale_up.stabilization_window_s
        down_window = self.spec.behavior.scale_down.stabilization_window_s
        up_cutoff, down_cutoff = now - up_window, now - down_window
        up_rec = down_rec = wanted
        old_index: int | None = None
        for i, rec in enumerate(self._recommendations):
            if rec.at > up_cutoff:
                up_rec = min(up_rec, rec.replicas)
            if rec.at > down_cutoff:
                down_rec = max(down_rec, rec.replicas)
            if rec.at < up_cutoff and rec.at < down_cutoff:
                old_index = i
        recommendation = max(current, up_rec)
        recommendation = min(recommendation, down_rec)
        self._remember(old_index, now, wanted)
        reason = "ScaleUpStabilized" if wanted >= current else "ScaleDownStabilized"
        return recommendation, reason if recommendation != wanted else "ReadyForNewScale"

    def _limit(self, now: float, current: int, desired: int) -> tuple[int, str]:
        assert self.spec.behavior is not None
        spec, b = self.spec, self.spec.behavior
        if desired > current:
            limit = max(current, scale_up_limit(current, self.scale_up_events, self.scale_down_events,
                                                b.scale_up, now))
            if spec.max_replicas > limit:
                ceiling, reason = limit, "ScaleUpLimit"
            else:
                ceiling, reason = spec.max_replicas, "TooManyReplicas"
            if desired > ceiling:
                return ceiling, reason
        elif desired < current:
            limit = min(current, scale_down_limit(current, self.scale_up_events, self.scale_down_events,
                                                  b.scale_down, now))
            if spec.min_replicas < limit:
                floor, reason = limit, "ScaleDownLimit"
            else:
                floor, reason = spec.min_replicas, "TooFewReplicas"
            if desired < floor:
                return floor, reason
        return desired, "DesiredWithinRange"

    # -- without behavior (legacy) ---------------------------------------------------------
    def _stabilize_legacy(self, now: float, wanted: int) -> int:
        cutoff = now - self.spec.downscale_stabilization_s
        best = wanted
        old_index: int | None = None
        for i, rec in enumerate(self._recommendations):
            if rec.at < cutoff:
                old_index = i
            elif rec.replicas > best:
                best = rec.replicas
        self._remember(old_index, now, wanted)
        return best

    def _limit_legacy(self, current: int, desired: int) -> tuple[int, str]:
        spec = self.spec
        up_limit = int(max(_LEGACY_SCALE_UP_FACTOR * current, _LEGACY_SCALE_UP_MINIMUM))
        if spec.max_replicas > up_limit:
            ceiling, reason = up_limit, "ScaleUpLimit"
        else:
            ceiling, reason = spec.max_replicas, "TooManyReplicas"
        if desired < spec.min_replicas:
            return spec.min_replicas, "TooFewReplicas"
        if desired > ceiling:
            return ceiling, reason
        return desired, "DesiredWithinRange"

    def _remember(self, old_index: int | None, now: float, wanted: int) -> None:
        # Upstream reuses one expired slot per period instead of growing the list.
        if old_index is not None:
            self._recommendations[old_index] = _Recommendation(now, wanted)
        else:
            self._recommendations.append(_Recommendation(now, wanted))


def _store(events: list[ScaleEvent], event: ScaleEvent, longest_period_s: int, now: float) -> list[ScaleEvent]:
    """Add ``event``, reusing the slot of one event older than the longest policy period."""
    cutoff = now - longest_period_s
    out = list(events)
    for i in range(len(out) - 1, -1, -1):
        if out[i].at < cutoff:
            out[i] = event
            return out
    out.append(event)
    return out

