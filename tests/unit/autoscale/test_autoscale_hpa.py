"""The HPA algorithm against the upstream documentation's examples and the controller's rules.

Sources (facts, not code): Kubernetes docs "Horizontal Pod Autoscaling" (kubernetes.io/docs/
concepts/workloads/autoscaling/horizontal-pod-autoscale: "Algorithm details", "Stabilization
window", "Scaling policies", "Default Behavior", the behavior examples) and the controller
(kubernetes/kubernetes pkg/controller/podautoscaler: replica_calculator.go calcPlainMetricReplicas
and groupPods; horizontal.go computeReplicasForMetrics, reconcileAutoscaler,
stabilizeRecommendation[WithBehaviors], calculateScale{Up,Down}Limit[WithScalingRules]).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from inferstack.autoscale import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    Autoscaler,
    Behavior,
    HPASpec,
    MetricSpec,
    PodSample,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    desired_from_metrics,
    replicas_for_pods_metric,
    replicas_for_pool_metric,
    scale_down_limit,
    scale_up_limit,
)

W = "vllm:num_requests_waiting"
R = "vllm:num_requests_running"


def pods(*values: float | None, pending: int = 0, deleting: int = 0, failed: int = 0,
         metric: str = W) -> list[PodSample]:
    """Running pods with these values (None = no value), plus pending/deleting/failed ones."""
    out = [PodSample(f"p{i}", "running", True, False, {} if v is None else {metric: v})
           for i, v in enumerate(values)]
    out += [PodSample(f"pending{i}", "pending", False) for i in range(pending)]
    out += [PodSample(f"del{i}", "running", True, True, {metric: 100.0}) for i in range(deleting)]
    out += [PodSample(f"fail{i}", "failed", False, False, {metric: 100.0}) for i in range(failed)]
    return out


# (case, current replicas, pod values, extra pod kinds, target, expected proposal)
PODS_METRIC_CASES: list[tuple[str, int, Sequence[float | None], dict[str, int], float, int]] = [
    # docs "Algorithm details": current 200m, desired 100m -> double; 50m -> halve.
    ("docs: 200m vs 100m doubles", 2, [0.2, 0.2], {}, 0.1, 4),
    ("docs: 50m vs 100m halves", 4, [0.05] * 4, {}, 0.1, 2),
    # desired = ceil(current x metric / target): 3 pods at 7.5 waiting, target 3 -> ceil(7.5).
    ("ceil of the ratio", 3, [7.5] * 3, {}, 3, 8),
    # tolerance 0.1: no change while |ratio - 1| <= 0.1 (inclusive), a change just outside.
    ("within tolerance above", 4, [3.3] * 4, {}, 3, 4),
    ("within tolerance below", 4, [2.7] * 4, {}, 3, 4),
    ("just outside tolerance", 4, [3.34] * 4, {}, 3, 5),
    # Pods being deleted and failed pods are ignored entirely.
    ("deleting and failed pods ignored", 2, [6, 6], {"deleting": 2, "failed": 1}, 3, 4),
    # The average is over pods with values, in integer milli-units: (1m + 2m) // 2 = 1m = target.
    ("integer milli average", 2, [0.001, 0.002], {}, 0.001, 2),
    # Missing values, scale-down: count them at the target. Naive: ceil(0.2 x 2) = 1; with the
    # missing pod at 5: avg 7/3 -> ratio 0.4666 -> ceil(1.4) = 2.
    ("missing on scale-down count as target", 3, [1, 1, None], {}, 5, 2),
    # Missing values, scale-up: count them as 0; if that reverses the direction, no change.
    ("missing on scale-up reversing direction", 3, [6, 6, None], {}, 5, 3),
    # Missing at 0 on a real scale-up: avg (12+12+0)/3 = 8 -> 1.6 -> ceil(4.8) = 5.
    ("missing on scale-up count as zero", 3, [12, 12, None], {}, 5, 5),
    # Not-yet-ready (pending) pods on a scale-up count as 0: (10+10+0+0)/4 = 5 = target -> keep 4.
    ("pending pods dampen a scale-up", 4, [10, 10], {"pending": 2}, 5, 4),
    # ... and 3 of 4 unready/ready: (12+12+0+0)/4 = 6 -> 1.2 -> ceil(4.8) = 5.
    ("pending pods at zero, still up", 4, [12, 12], {"pending": 2}, 5, 5),
    # Pending pods do not count on a scale-down: ceil(0.2 x 2) = 1.
    ("pending pods ignored on scale-down", 3, [1, 1], {"pending": 1}, 5, 1),
]


@pytest.mark.parametrize(("case", "current", "values", "extra", "target", "expected"), PODS_METRIC_CASES,
                         ids=[c[0] for c in PODS_METRIC_CASES])
def test_pods_metric_proposal(case: str, current: int, values: Sequence[float | None], extra: dict[str, int],
                              target: float, expected: int) -> None:
    proposal = replicas_for_pods_metric(current, MetricSpec(W, target), pods(*values, **extra))
    assert proposal.error is None and proposal.replicas == expected, case


def test_float_average_would_have_scaled_but_the_controller_does_not() -> None:
    # 1.5m average as a float is ratio 1.5; the controller's integer milli average is 1m.
    p = replicas_for_pods_metric(2, MetricSpec(W, 0.001), pods(0.001, 0.002))
    assert p.ratio == 1.0 and p.usage == 0.001


def test_no_pods_or_no_values_is_an_invalid_metric() -> None:
    assert replicas_for_pods_metric(1, MetricSpec(W, 3), []).error == "no pods returned by selector"
    p = replicas_for_pods_metric(2, MetricSpec(W, 3), pods(None, pending=1))
    assert p.replicas is None and "no values" in (p.error or "")


def test_running_but_not_ready_pods_with_values_count_for_non_cpu_metrics() -> None:
    # groupPods only checks readiness for CPU; a running pod with a value counts as ready.
    sample = [PodSample("a", "running", False, False, {W: 9.0}), PodSample("b", "running", True, False, {W: 9.0})]
    assert replicas_for_pods_metric(2, MetricSpec(W, 3), sample).replicas == 6


@pytest.mark.parametrize(
    ("current", "value", "ready", "expected"),
    [
        (2, 10.0, 2, 4),  # ratio 2 x ready pods
        (2, 5.2, 2, 2),  # within tolerance
        (3, 10.0, 2, 4),  # scales by ready pods, not by the current count
        (0, 12.0, 0, 3),  # from zero: ceil(ratio)
        (0, 0.0, 0, 0),
    ],
)
def test_pool_metric_value_target(current: int, value: float, ready: int, expected: int) -> None:
    p = replicas_for_pool_metric(current, MetricSpec("inference_pool_average_queue_size", 5, "pool"), value, ready)
    assert p.replicas == expected


def spec(*metrics: MetricSpec, behavior: Behavior | None = Behavior(), lo: int = 1, hi: int = 10) -> HPASpec:
    return HPASpec(min_replicas=lo, max_replicas=hi, metrics=metrics or (MetricSpec(W, 3),), behavior=behavior)


def both(w: float | None, r: float | None, n: int) -> list[PodSample]:
    values = {}
    if w is not None:
        values[W] = w
    if r is not None:
        values[R] = r
    return [PodSample(f"p{i}", metrics=values) for i in range(n)]


def test_several_metrics_take_the_largest_proposal() -> None:
    s = spec(MetricSpec(W, 3), MetricSpec(R, 10))
    replicas, proposals = desired_from_metrics(s, 2, both(3.0, 25.0, 2))  # waiting: keep 2; running: 5
    assert replicas == 5 and [p.replicas for p in proposals] == [2, 5]


def test_an_invalid_metric_blocks_a_scale_down_but_not_a_scale_up() -> None:
    # docs: "if any of these metrics cannot be converted into a desired replica count ... and a
    # scale down is suggested by the metrics which can be fetched, scaling is skipped".
    s = spec(MetricSpec(W, 3), MetricSpec(R, 10))
    assert desired_from_metrics(s, 4, both(0.3, None, 4))[0] is None
    assert desired_from_metrics(s, 4, both(9.0, None, 4))[0] == 12
    assert desired_from_metrics(s, 4, both(None, None, 4))[0] is None  # every metric invalid


@pytest.mark.parametrize(
    ("select", "current", "expected"),
    [
        # docs "Scaling policies": Pods 4 / 60 s and Percent 10 / 60 s; with 80 replicas the
        # Percent policy removes 8 (Max = the biggest change), at 72 it removes 8 (7.2 rounded up).
        ("Max", 80, 72),
        ("Max", 72, 64),
        # below 40 replicas the Pods policy is the bigger change
        ("Max", 30, 26),
        # selectPolicy Min: the smallest change
        ("Min", 80, 76),
        ("Min", 30, 27),
        ("Disabled", 80, 80),
    ],
)
def test_scale_down_policies_from_the_docs(select: str, current: int, expected: int) -> None:
    rules = ScalingRules(0, (ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60)), select)  # type: ignore[arg-type]
    assert scale_down_limit(current, [], [], rules, now=0.0) == expected


@pytest.mark.parametrize(
    ("current", "up_events", "down_events", "expected"),
    [
        (1, [], [], 5),  # default scale-up: max(+4 pods, +100%) per 15 s
        (10, [], [], 20),
        (5, [ScaleEvent(100.0, 4)], [], 5),  # 4 added 10 s ago: the period started at 1 -> max(5, 2)
        (5, [ScaleEvent(95.0, 4)], [], 10),  # 15 s ago is outside the period (strictly after the cutoff)
        (3, [], [ScaleEvent(105.0, 2)], 10),  # a scale-down in the period: it started at 5 -> max(9, 10)
    ],
)
def test_default_scale_up_limit_and_the_event_history(current: int, up_events: list[ScaleEvent],
                                                      down_events: list[ScaleEvent], expected: int) -> None:
    assert scale_up_limit(current, up_events, down_events, DEFAULT_SCALE_UP, now=110.0) == expected


def test_percent_900_multiplies_by_ten() -> None:
    # docs: "scaleUp ... Percent 900 ... 9 times the current number of pods can be added"
    rules = ScalingRules(0, (ScalingPolicy("Percent", 900, 60),))
    assert scale_up_limit(3, [], [], rules, now=0.0) == 30


def test_scale_down_stabilization_window_keeps_the_highest_recommendation() -> None:
    # docs "Stabilization window": with 300 s, the highest recommendation of the last 5 minutes
    # is used. Start at 5 (recorded as the first recommendation), demand for 2 from t=15.
    scaler = Autoscaler(spec())
    low = pods(1.2, 1.2, 1.2, 1.2, 1.2)  # ratio 0.4 -> ceil(2) = 2
    assert scaler.step(0.0, 5, low).desired_replicas == 5
    assert [scaler.step(t, 5, low).desired_replicas for t in (15.0, 150.0, 285.0)] == [5, 5, 5]
    d = scaler.step(300.0, 5, low)  # the t=0 sample is no longer strictly inside the window
    assert d.desired_replicas == 2 and d.rescale


def test_scale_up_stabilization_window_takes_the_lowest_recommendation() -> None:
    behavior = Behavior(scale_up=ScalingRules(60, DEFAULT_SCALE_UP.policies), scale_down=DEFAULT_SCALE_DOWN)
    scaler = Autoscaler(spec(behavior=behavior))
    high = pods(9.0, 9.0)  # ratio 3 -> 6
    assert [scaler.step(t, 2, high).desired_replicas for t in (0.0, 15.0, 45.0)] == [2, 2, 2]
    assert scaler.step(60.0, 2, high).desired_replicas == 6


def test_scale_up_rate_limited_by_pods_per_period_with_history() -> None:
    behavior = Behavior(scale_up=ScalingRules(0, (ScalingPolicy("Pods", 1, 60),)), scale_down=DEFAULT_SCALE_DOWN)
    scaler = Autoscaler(spec(behavior=behavior))
    assert scaler.step(0.0, 1, pods(30.0)).desired_replicas == 2
    assert scaler.step(15.0, 2, pods(30.0, 30.0)).desired_replicas == 2  # 1 pod per 60 s used up
    assert scaler.step(45.0, 2, pods(30.0, 30.0)).desired_replicas == 2
    assert scaler.step(60.0, 2, pods(30.0, 30.0)).desired_replicas == 3
    assert [e.change for e in scaler.scale_up_events] == [1, 1]


def test_scale_down_disabled() -> None:
    behavior = Behavior(scale_up=DEFAULT_SCALE_UP, scale_down=ScalingRules(0, DEFAULT_SCALE_DOWN.policies, "Disabled"))
    d = Autoscaler(spec(behavior=behavior)).step(0.0, 5, pods(0.0, 0.0, 0.0, 0.0, 0.0))
    assert d.desired_replicas == 5


def test_min_and_max_bound_the_result() -> None:
    s = spec(lo=2, hi=4, behavior=Behavior(scale_down=ScalingRules(0, DEFAULT_SCALE_DOWN.policies)))
    assert Autoscaler(s).step(0.0, 2, pods(30.0, 30.0)).desired_replicas == 4
    d = Autoscaler(s).step(0.0, 3, pods(0.0, 0.0, 0.0))
    assert (d.desired_replicas, d.reason) == (2, "TooFewReplicas")


def test_outside_the_bounds_the_controller_moves_to_them_without_metrics() -> None:
    s = spec(lo=2, hi=4)
    assert Autoscaler(s).decide(0.0, 6, []).desired_replicas == 4
    assert Autoscaler(s).decide(0.0, 1, []).desired_replicas == 2
    d = Autoscaler(s).decide(0.0, 0, [])  # scaled to zero by hand: autoscaling disabled
    assert (d.desired_replicas, d.reason) == (0, "ScalingDisabled")


def test_without_behavior_the_legacy_limits_apply() -> None:
    # No behavior: scale up to at most max(2 x current, 4), scale down after the 300 s window.
    s = spec(behavior=None, hi=20)
    assert Autoscaler(s).step(0.0, 1, pods(30.0)).desired_replicas == 4
    assert Autoscaler(s).step(0.0, 3, pods(30.0, 30.0, 30.0)).desired_replicas == 6
    scaler = Autoscaler(s)
    low = pods(0.5, 0.5, 0.5, 0.5)
    assert scaler.step(0.0, 4, low).desired_replicas == 4
    assert scaler.step(299.0, 4, low).desired_replicas == 4
    assert scaler.step(301.0, 4, low).desired_replicas == 1


def test_per_direction_tolerance() -> None:
    # Kubernetes 1.33 (alpha): behavior.scaleUp.tolerance replaces the 0.1 for scale-ups only.
    behavior = Behavior(scale_up=ScalingRules(0, DEFAULT_SCALE_UP.policies, tolerance=0.5), scale_down=DEFAULT_SCALE_DOWN)
    assert Autoscaler(spec(behavior=behavior)).step(0.0, 2, pods(4.2, 4.2)).desired_replicas == 2
    assert Autoscaler(spec()).step(0.0, 2, pods(4.2, 4.2)).desired_replicas == 3


def test_decide_does_not_record_a_scale_record_scale_does() -> None:
    scaler = Autoscaler(spec(behavior=Behavior(scale_up=ScalingRules(0, (ScalingPolicy("Pods", 1, 60),)))))
    d = scaler.decide(0.0, 1, pods(30.0))
    assert d.desired_replicas == 2 and scaler.scale_up_events == []
    # The scale failed (not recorded): the next period may try again.
    assert scaler.decide(15.0, 1, pods(30.0)).desired_replicas == 2
    scaler.record_scale(15.0, 1, 2)
    assert scaler.decide(30.0, 2, pods(30.0, 30.0)).desired_replicas == 2


def test_decision_message_names_metric_average_and_target() -> None:
    d = Autoscaler(spec()).step(0.0, 1, pods(6.0))
    assert d.message() == "scaled 1 -> 2: vllm:num_requests_waiting avg 6 > target 3"
    kept = Autoscaler(spec()).step(0.0, 2, pods(3.0, 3.0))
    assert kept.message() == "kept 2: vllm:num_requests_waiting avg 3 = target 3"


def test_invalid_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="min_replicas \\(3\\) cannot exceed max_replicas \\(2\\)"):
        HPASpec(3, 2, (MetricSpec(W, 3),))
    with pytest.raises(ValueError, match="target has value 0"):
        MetricSpec(W, 0)


def test_with_spec_keeps_the_history() -> None:
    scaler = Autoscaler(spec(behavior=Behavior(scale_up=ScalingRules(0, (ScalingPolicy("Pods", 1, 60),)))))
    scaler.step(0.0, 1, pods(30.0))
    edited = scaler.with_spec(spec(MetricSpec(W, 10), behavior=scaler.spec.behavior))
    assert edited.scale_up_events == scaler.scale_up_events and edited.recommendations == scaler.recommendations
    assert edited.step(15.0, 2, pods(30.0, 30.0)).desired_replicas == 2  # still rate-limited


def test_expired_recommendations_are_reused_not_accumulated() -> None:
    scaler = Autoscaler(spec(behavior=None))
    for i in range(100):
        scaler.step(i * 15.0, 2, pods(3.0, 3.0))
    # 300 s window / 15 s period: about 21 live slots, never 100.
    assert len(scaler.recommendations) <= 22
