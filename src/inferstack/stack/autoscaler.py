"""The local autoscaler: the Kubernetes HPA algorithm (``inferstack.autoscale``) run against the
stack's own replicas, plus scale-from-zero on the picker's held requests.

Every sync period the supervisor hands it the members (name, url, state); it reads each ready
replica's ``/metrics`` (the same reader as ``status``), builds what the HPA controller sees (a
starting replica is a pending pod, a retiring one has a deletion timestamp) and returns the
controller's decision, which the supervisor applies as a new desired count. Pool metrics (the
``epp-queue`` policy metric) are the average vLLM queue over ready replicas, the value the picker's
``inference_pool_average_queue_size`` reports.

From zero there are no pods to measure: like KEDA's activation step, the first request the
picker holds (``inferstack_epp_held_requests`` > 0 on its /metrics) scales 0 -> max(1, min).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inferstack.autoscale.hpa import Autoscaler, Decision, PodSample
from inferstack.autoscale.policy import METRICS, AutoscalingPolicy
from inferstack.engine.metrics import ReplicaFigures, fetch_figures, parse_series
from inferstack.gateway import HELD_REQUESTS_METRIC, GatewayStatus, epp_metrics_pages
from inferstack.stack.status import AutoscalerStatus

__all__ = ["LocalAutoscaler", "ReplicaView", "held_requests", "pod_samples"]

_POOL_QUEUE = METRICS["epp-queue"].name


@dataclass(frozen=True)
class ReplicaView:
    """What the autoscaler needs of one member (a copy, taken under the supervisor's lock)."""

    name: str
    url: str
    state: str  # starting | ready | backoff | draining | ...
    retiring: bool


def pod_samples(views: Sequence[ReplicaView],
                fetch: Callable[[str], ReplicaFigures | None]) -> tuple[list[PodSample], dict[str, float]]:
    """The pods as the HPA controller would see them, and the pool-level values."""
    pods: list[PodSample] = []
    waiting: list[float] = []
    for v in views:
        if v.retiring:
            pods.append(PodSample(v.name, "running", ready=False, deleting=True))
            continue
        if v.state != "ready":
            pods.append(PodSample(v.name, "pending", ready=False))
            continue
        figures = fetch(v.url)
        if figures is None:  # no answer: a running pod with a missing metric
            pods.append(PodSample(v.name, "running", ready=True))
            continue
        waiting.append(figures.waiting)
        pods.append(PodSample(v.name, "running", ready=True, metrics={
            METRICS["waiting"].name: figures.waiting,
            METRICS["running"].name: figures.running,
            METRICS["kv"].name: figures.kv_cache_usage,
        }))
    pool = {_POOL_QUEUE: sum(waiting) / len(waiting)} if waiting else {}
    return pods, pool


class LocalAutoscaler:
    def __init__(self, policy: AutoscalingPolicy,
                 fetch: Callable[[str], ReplicaFigures | None] = lambda url: fetch_figures(url, timeout_s=2.0)) -> None:
        self.policy = policy
        self.hpa = Autoscaler(policy.to_spec())
        self._fetch = fetch
        self.last: Decision | None = None

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.policy.min_replicas), self.policy.max_replicas)

    def sync(self, now: float, current: int, views: Sequence[ReplicaView]) -> Decision:
        """One sync period: the controller's decision for ``current`` desired replicas."""
        pods, pool = pod_samples(views, self._fetch)
        self.last = self.hpa.decide(now, current, pods, pool)
        return self.last

    def record_scale(self, now: float, previous: int, new: int) -> None:
        self.hpa.record_scale(now, previous, new)

    def status(self) -> AutoscalerStatus:
        p = self.policy
        return AutoscalerStatus(
            policy=p.label(), min_replicas=p.min_replicas, max_replicas=p.max_replicas,
            sync_period_s=p.sync_period_s,
            last_decision=self.last.message() if self.last is not None else None,
            last_reason=self.last.reason if self.last is not None else None)


def held_requests(gateway_status: GatewayStatus, timeout_s: float = 1.0) -> float:
    """Requests the endpoint pickers hold now for want of a ready replica (0 when none can say)."""
    return sum(parse_series(page, [HELD_REQUESTS_METRIC]).get(HELD_REQUESTS_METRIC, 0.0)
               for page in epp_metrics_pages(gateway_status, timeout_s))
