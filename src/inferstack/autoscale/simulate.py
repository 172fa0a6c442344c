"""The policy simulator: replay a request-rate trace through the HPA algorithm and a fluid queue.

Model, per step of ``step_s`` (1 s):

- Load: each step's arrivals are Poisson-distributed around the trace's rate (seeded: the same
  inputs and ``seed`` give the same numbers; ``seed`` None = a fluid, exactly the rate). The noise
  matters: with continuous batching, a queue forms only when arrivals outrun capacity, and near
  saturation they do so in bursts, as on a real server.
- Replicas: a new replica is "pending" (no metrics, no service) for ``startup_s`` seconds, then
  serves up to ``capacity_rps``. One FIFO queue in front of the ready replicas (the gateway keeps
  them evenly loaded); served = min(queue + arrivals, ready x capacity x step); the rest carries
  over. Removing replicas takes pending ones first, then the youngest (what a ReplicaSet does).
- Metrics, sampled every ``sync_period_s`` from the policy (15 s): waiting = queue / ready replicas;
  running = served rate x ``service_s`` / ready replicas (Little's law); kv = running / (capacity x
  service_s), i.e. 1.0 when a replica is saturated (crude: vLLM's KV use depends on lengths);
  epp-queue = waiting (the picker's pool average).
- SLO: a request meets it when its queue wait (arrival to start of service, FIFO) is at most
  ``slo_wait_s``; requests still queued at the end count by how long they have waited so far.
- Cost: replica-seconds of every replica that exists (pending ones cost too).

Defaults are this project's measurements (docs/autoscale.md says where each comes from): a replica
is ready 30 s after it is asked for (README: eager time-to-ready 22-37 s), serves 4.5 req/s (the
highest trustworthy stage of docs/example-report: 2 replicas, 8.9-9.1 req/s achieved) with a mean
service time of 2 s (that stage: 34 output tokens per request at TPOT P50 ~55 ms, plus TTFT).
"""

from __future__ import annotations

import csv
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from inferstack.autoscale.hpa import Autoscaler, Decision, PodSample
from inferstack.autoscale.policy import AutoscalingPolicy
from inferstack.errors import ConfigError
from inferstack.wire import VllmMetric

__all__ = [
    "BUILTIN_TRACES",
    "SimSettings",
    "SimResult",
    "Trace",
    "compare",
    "load_trace",
    "simulate",
]


@dataclass(frozen=True)
class Trace:
    """A piecewise-constant request rate: ``points`` are (start time s, rate req/s), sorted; the
    last rate lasts until ``duration_s``."""

    name: str
    points: tuple[tuple[float, float], ...]
    duration_s: float

    def rate_at(self, t: float) -> float:
        rate = self.points[0][1]
        for start, r in self.points:
            if start > t:
                break
            rate = r
        return rate


def _bursty() -> Trace:
    # 20 minutes against 4.5 req/s per replica: a 3-minute burst that needs 2 replicas, a 1-minute
    # spike that needs 4, 4 minutes just above one replica, 4 minutes that need 3, then quiet.
    points = ((0, 3.0), (120, 8.0), (300, 3.0), (420, 14.0), (480, 5.0), (720, 10.0), (960, 2.0))
    return Trace("bursty", tuple((float(t), r) for t, r in points), 1200.0)


def _diurnal() -> Trace:
    # A day compressed into 30 minutes: 1 req/s at night, 11 req/s at the midday peak, 30 s steps.
    period = 1800.0
    points = tuple((float(t), round(1.0 + 10.0 * (1 - math.cos(2 * math.pi * t / period)) / 2, 3))
                   for t in range(0, int(period), 30))
    return Trace("diurnal", points, period)


BUILTIN_TRACES = {"bursty": _bursty, "diurnal": _diurnal}


def load_trace(spec: str) -> Trace:
    """A built-in trace (bursty, diurnal) or a CSV file of ``time_s,rate_rps`` rows (a header row
    is allowed; the last row's time is the end unless its rate is kept for ``step`` more)."""
    if spec in BUILTIN_TRACES:
        return BUILTIN_TRACES[spec]()
    path = Path(spec)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"--trace '{spec}' is neither {' nor '.join(BUILTIN_TRACES)} nor a readable "
                          f"CSV file: {exc.strerror or exc}") from exc
    points: list[tuple[float, float]] = []
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        try:
            t, rate = float(row[0]), float(row[1])
        except (ValueError, IndexError):
            if not points and lineno == 1:
                continue  # a header
            raise ConfigError(f"trace '{spec}' line {lineno}: expected 'time_s,rate_rps', got {row!r}") from None
        if rate < 0 or (points and t <= points[-1][0]):
            raise ConfigError(f"trace '{spec}' line {lineno}: times must increase and rates be >= 0")
        points.append((t, rate))
    if len(points) < 2:
        raise ConfigError(f"trace '{spec}' needs at least two rows of 'time_s,rate_rps'")
    return Trace(path.stem, tuple(points[:-1]), points[-1][0])


@dataclass(frozen=True)
class SimSettings:
    startup_s: float = 30.0  # replica time-to-ready (README: eager 22-37 s)
    capacity_rps: float = 4.5  # per ready replica (docs/example-report, highest trusted stage)
    service_s: float = 2.0  # mean time a request runs (for the running/kv metrics)
    slo_wait_s: float = 2.0  # queue wait that still meets the SLO
    step_s: float = 1.0
    initial_replicas: int | None = None  # default: the policy's min_replicas, ready at t=0
    seed: int | None = 0  # Poisson arrivals from this seed; None: a fluid at exactly the rate

    def __post_init__(self) -> None:
        for name in ("startup_s", "slo_wait_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} has value {getattr(self, name)}; must be >= 0")
        for name in ("capacity_rps", "service_s", "step_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} has value {getattr(self, name)}; must be > 0")


@dataclass
class SimResult:
    """One policy over one trace: per-step series and the totals the CLI prints."""

    label: str
    policy: AutoscalingPolicy
    step_s: float = 1.0
    times: list[float] = field(default_factory=list)
    offered_rps: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)  # existing (pending + ready)
    ready: list[int] = field(default_factory=list)
    queue: list[float] = field(default_factory=list)  # requests waiting, all replicas
    waiting_per_replica: list[float] = field(default_factory=list)
    arrivals_met: list[float] = field(default_factory=list)  # per step of arrival
    arrivals: list[float] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    replica_seconds: float = 0.0
    requests: float = 0.0
    met: float = 0.0

    @property
    def slo_attainment(self) -> float:
        return self.met / self.requests if self.requests else 1.0

    @property
    def scale_events(self) -> list[Decision]:
        return [d for d in self.decisions if d.rescale]

    def rolling_attainment(self, window_s: float = 30.0) -> list[float | None]:
        """SLO attainment of the requests that arrived in the trailing window (None: no arrivals)."""
        n = max(1, round(window_s / self.step_s))
        out: list[float | None] = []
        arr = met = 0.0
        for i, (a, m) in enumerate(zip(self.arrivals, self.arrivals_met)):
            arr += a
            met += m
            if i >= n:
                arr -= self.arrivals[i - n]
                met -= self.arrivals_met[i - n]
            out.append(met / arr if arr > 1e-9 else None)
        return out

    def summary(self) -> str:
        duration = len(self.times) * self.step_s
        avg = self.replica_seconds / duration if duration else 0.0
        return (f"{self.label}: replica-seconds {self.replica_seconds:.0f} (mean {avg:.2f} replicas, "
                f"peak {max(self.replicas, default=0)}), SLO attainment {100 * self.slo_attainment:.1f}% "
                f"(queue wait <= SLO), {len(self.scale_events)} scale events")


@dataclass
class _Replica:
    ready_at: float
    created_at: float


def _metrics_for(name: str, waiting: float, running: float, kv: float) -> float:
    return {VllmMetric.WAITING.value: waiting, VllmMetric.RUNNING.value: running,
            VllmMetric.KV_CACHE_USAGE.value: kv, "inference_pool_average_queue_size": waiting}[name]


def simulate(trace: Trace, policy: AutoscalingPolicy, settings: SimSettings | None = None,
             label: str | None = None) -> SimResult:
    """Run ``policy`` over ``trace``; deterministic."""
    s = settings or SimSettings()
    spec = policy.to_spec()
    scaler = Autoscaler(spec)
    result = SimResult(label=label or policy.label(), policy=policy, step_s=s.step_s)
    start = s.initial_replicas if s.initial_replicas is not None else max(policy.min_replicas, 1)
    replicas = [_Replica(ready_at=0.0, created_at=0.0) for _ in range(start)]
    cohorts: deque[list[float]] = deque()  # [arrival step index, amount still queued], FIFO
    queue = 0.0
    served_rate = 0.0
    steps = int(math.ceil(trace.duration_s / s.step_s))
    rng = random.Random(s.seed) if s.seed is not None else None
    sync_every = max(1, round(policy.sync_period_s / s.step_s))
    for i in range(steps):
        t = i * s.step_s
        ready = [r for r in replicas if r.ready_at <= t]
        if i % sync_every == 0 and i > 0:
            n_ready = len(ready)
            waiting = queue / n_ready if n_ready else 0.0
            running = served_rate * s.service_s / n_ready if n_ready else 0.0
            kv = min(1.0, running / (s.capacity_rps * s.service_s)) if n_ready else 0.0
            pods = []
            for k, r in enumerate(replicas):
                if r.ready_at <= t:
                    values = {m.info.name: _metrics_for(m.info.name, waiting, running, kv)
                              for m in policy.metrics if m.info.kind == "pods"}
                    pods.append(PodSample(f"r{k}", "running", True, False, values))
                else:
                    pods.append(PodSample(f"r{k}", "pending", False))
            pool = {m.info.name: waiting for m in policy.metrics if m.info.kind == "pool"}
            decision = scaler.step(t, len(replicas), pods, pool)
            result.decisions.append(decision)
            if decision.desired_replicas > len(replicas):
                replicas += [_Replica(t + s.startup_s, t) for _ in range(decision.desired_replicas - len(replicas))]
            elif decision.desired_replicas < len(replicas):
                # Pending first, then the youngest ready ones.
                replicas.sort(key=lambda r: (r.ready_at <= t, -r.created_at))
                replicas = replicas[len(replicas) - decision.desired_replicas:]
            ready = [r for r in replicas if r.ready_at <= t]
        arriving = trace.rate_at(t) * s.step_s
        if rng is not None:
            arriving = float(_poisson(rng, arriving))
        cohorts.append([float(i), arriving])
        queue += arriving
        capacity = len(ready) * s.capacity_rps * s.step_s
        served = min(queue, capacity)
        served_rate = served / s.step_s
        queue -= served
        result.arrivals.append(arriving)
        result.arrivals_met.append(0.0)
        _serve(cohorts, served, i, s, result)
        result.times.append(t)
        result.offered_rps.append(trace.rate_at(t))
        result.replicas.append(len(replicas))
        result.ready.append(len(ready))
        result.queue.append(queue)
        result.waiting_per_replica.append(queue / len(ready) if ready else queue)
        result.replica_seconds += len(replicas) * s.step_s
    end = steps
    for arrived, amount in cohorts:  # still queued at the end
        if (end - arrived) * s.step_s <= s.slo_wait_s:
            result.arrivals_met[int(arrived)] += amount
    result.requests = sum(result.arrivals)
    result.met = sum(result.arrivals_met)
    return result


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson sample: Knuth's product of uniforms (fine for the few dozen per step we use);
    a normal approximation above 60."""
    if lam <= 0:
        return 0
    if lam > 60:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _serve(cohorts: deque[list[float]], served: float, step: int, s: SimSettings, result: SimResult) -> None:
    """Take ``served`` requests from the front of the FIFO; credit those whose wait met the SLO.
    Within a step, service is spread evenly: the k-th fraction starts at (step + k) * step_s."""
    remaining = served
    done = 0.0
    while remaining > 1e-12 and cohorts:
        cohort = cohorts[0]
        take = min(cohort[1], remaining)
        # The moment this slice starts service, as a fraction into the step.
        start = step + (done + take / 2) / served if served else step
        wait = max(0.0, (start - cohort[0]) * s.step_s)
        if wait <= s.slo_wait_s:
            result.arrivals_met[int(cohort[0])] += take
        cohort[1] -= take
        remaining -= take
        done += take
        if cohort[1] <= 1e-12:
            cohorts.popleft()


def compare(trace: Trace, policies: Sequence[tuple[str, AutoscalingPolicy]],
            settings: SimSettings | None = None) -> list[SimResult]:
    """Every policy over the same trace."""
    return [simulate(trace, policy, settings, label) for label, policy in policies]

