"""The autoscaling policy: one typed YAML section that drives the HPA algorithm locally and
renders the Kubernetes HPA (and the KEDA ScaledObject) for GKE.

Example (every key optional; see docs/autoscale.md)::

    autoscaling:
      min_replicas: 1
      max_replicas: 4
      metrics:
        - {metric: waiting, target: 3}     # vllm:num_requests_waiting, per-pod average
        - {metric: kv, target: 0.8}        # vllm:kv_cache_usage_perc
      behavior:                            # omitted = an HPA without behavior (Kubernetes defaults)
        scale_up: {stabilization_window_s: 0, policies: [{type: Pods, value: 1, period_s: 60}]}
        scale_down: {stabilization_window_s: 300, select_policy: Min,
                     policies: [{type: Pods, value: 1, period_s: 120}]}

``metric: X`` + ``target: Y`` at the top is shorthand for a one-entry ``metrics`` list, and so is
the inline form ``waiting:3`` (``parse_policy``). Metric names: waiting, running, kv (per-pod vLLM
gauges, AverageValue targets) and epp-queue (the endpoint picker's pool-average queue size, a
Value target); the old render names num_requests_waiting / kv_cache_usage still load.

Invariants: unknown keys are errors; errors name the key, the value and what is valid; the policy
converts to exactly one ``HPASpec`` (``to_spec``), so what runs locally is what renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inferstack.autoscale.hpa import (
    DEFAULT_DOWNSCALE_STABILIZATION_S,
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    DEFAULT_TOLERANCE,
    Behavior,
    HPASpec,
    MetricSpec,
    ScalingPolicy,
    ScalingRules,
)
from inferstack.configfile import read_yaml_mapping, validate
from inferstack.errors import ConfigError
from inferstack.wire import VllmMetric

__all__ = [
    "METRICS",
    "AutoscalingPolicy",
    "BehaviorSettings",
    "MetricInfo",
    "MetricTarget",
    "ScalingPolicySettings",
    "ScalingRulesSettings",
    "canonical_metric",
    "load_policy",
    "parse_policy",
]


@dataclass(frozen=True)
class MetricInfo:
    """What a short metric name stands for."""

    name: str  # the Prometheus series
    kind: Literal["pods", "pool"]
    default_target: float | None
    description: str


# GKE's guidance for queue size (best practices for autoscaling LLM inference on GPUs): start with
# a target of 3-5 waiting requests per replica and raise it while latency stays acceptable.
METRICS: dict[str, MetricInfo] = {
    "waiting": MetricInfo(VllmMetric.WAITING.value, "pods", 5.0,
                          "requests queued in vLLM, per replica (queue size)"),
    "running": MetricInfo(VllmMetric.RUNNING.value, "pods", None,
                          "requests in vLLM's running batch, per replica (batch size); no default: "
                          "pick it below the batch size where latency degrades"),
    "kv": MetricInfo(VllmMetric.KV_CACHE_USAGE.value, "pods", 0.8,
                     "KV-cache usage per replica, 0..1"),
    "epp-queue": MetricInfo("inference_pool_average_queue_size", "pool", 5.0,
                            "the endpoint picker's average queue size over the pool's endpoints "
                            "(Gateway API Inference Extension EPP metric, label name=<pool>)"),
}
_ALIASES = {
    "num_requests_waiting": "waiting", VllmMetric.WAITING.value: "waiting", "queue": "waiting",
    "num_requests_running": "running", VllmMetric.RUNNING.value: "running", "batch": "running",
    "kv_cache_usage": "kv", "kv_cache_usage_perc": "kv", VllmMetric.KV_CACHE_USAGE.value: "kv",
    "inference_pool_average_queue_size": "epp-queue", "pool-queue": "epp-queue",
}


def canonical_metric(name: str) -> str:
    """The short name of a metric given by short name, Prometheus series or old render name."""
    key = _ALIASES.get(name, name)
    if key not in METRICS:
        raise ValueError(f"unknown metric {name!r}: one of {', '.join(METRICS)}")
    return key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricTarget(_Strict):
    """One metric and its target value per replica."""

    metric: str = Field(description="waiting | running | kv | epp-queue.")
    target: float | None = Field(
        None, gt=0,
        description="Target per replica: waiting 5 (GKE: start at 3-5), kv 0.8, epp-queue 5; running "
        "has no default.",
    )

    @field_validator("metric")
    @classmethod
    def _known(cls, value: str) -> str:
        return canonical_metric(value)

    @model_validator(mode="after")
    def _default_target(self) -> MetricTarget:
        if self.target is None:
            default = METRICS[self.metric].default_target
            if default is None:
                raise ValueError(f"metric '{self.metric}' needs a target (requests per replica)")
            self.target = default
        if self.metric == "kv" and self.target > 1:
            raise ValueError(f"target has value {self.target:g} for metric 'kv', a fraction: must be <= 1")
        return self

    @property
    def info(self) -> MetricInfo:
        return METRICS[self.metric]

    @property
    def value(self) -> float:
        assert self.target is not None  # set by the validator
        return self.target


class ScalingPolicySettings(_Strict):
    """At most ``value`` pods (Pods) or percent (Percent) per ``period_s``."""

    type: Literal["Pods", "Percent"] = Field(description="Pods or Percent.")
    value: int = Field(ge=1, description="Pods, or percent of the replicas at the period's start.")
    period_s: int = Field(ge=1, le=1800, description="Window the limit applies to (1..1800 s).")


class ScalingRulesSettings(_Strict):
    """One direction of ``behavior``; what is omitted takes the Kubernetes default."""

    stabilization_window_s: int | None = Field(
        None, ge=0, le=3600,
        description="Window over which recommendations are stabilised (default 0 up, 300 down).",
    )
    select_policy: Literal["Max", "Min", "Disabled"] | None = Field(
        None, description="Which policy wins: Max (default, the biggest change), Min, or Disabled.",
    )
    policies: list[ScalingPolicySettings] | None = Field(
        None, min_length=1,
        description="Rate limits (default up: 4 pods or 100% per 15 s; down: 100% per 15 s).",
    )
    tolerance: float | None = Field(
        None, ge=0, lt=1,
        description="This direction's tolerance (Kubernetes 1.33+ alpha HPAConfigurableTolerance); "
        "default: the policy's 'tolerance'.",
    )

    def to_rules(self, default: ScalingRules) -> ScalingRules:
        return ScalingRules(
            stabilization_window_s=(default.stabilization_window_s if self.stabilization_window_s is None
                                    else self.stabilization_window_s),
            policies=(default.policies if self.policies is None else
                      tuple(ScalingPolicy(p.type, p.value, p.period_s) for p in self.policies)),
            select_policy=self.select_policy or default.select_policy,
            tolerance=self.tolerance,
        )


class BehaviorSettings(_Strict):
    """HPA ``behavior``; a direction left out takes the Kubernetes defaults."""

    scale_up: ScalingRulesSettings | None = Field(None, description="Scale-up rules.")
    scale_down: ScalingRulesSettings | None = Field(None, description="Scale-down rules.")

    def to_behavior(self) -> Behavior:
        return Behavior(
            scale_up=(self.scale_up or ScalingRulesSettings()).to_rules(DEFAULT_SCALE_UP),
            scale_down=(self.scale_down or ScalingRulesSettings()).to_rules(DEFAULT_SCALE_DOWN),
        )


class AutoscalingPolicy(_Strict):
    """The ``autoscaling:`` section: replica bounds, metrics with targets, behavior."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas (0 only with a pool metric on GKE).")
    max_replicas: int = Field(4, ge=1, description="Most replicas.")
    metrics: list[MetricTarget] = Field(
        default_factory=lambda: [MetricTarget(metric="waiting")], min_length=1,
        description="Metrics with targets; the largest proposal wins (default: waiting 5).",
    )
    behavior: BehaviorSettings | None = Field(
        None, description="Scaling behavior; omitted = an HPA without behavior (Kubernetes defaults).",
    )
    tolerance: float = Field(
        DEFAULT_TOLERANCE, ge=0, lt=1,
        description="No change while |metric/target - 1| <= tolerance (the controller's 0.1; on GKE "
        "only per direction, in behavior, can change it).",
    )
    sync_period_s: float = Field(
        15.0, gt=0, description="How often the algorithm runs (the controller's default 15 s).",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("metric" in data or "target" in data):
            if "metrics" in data:
                raise ValueError("give either 'metric'/'target' (one metric) or 'metrics' (a list), not both")
            data = dict(data)
            one: dict[str, Any] = {"metric": data.pop("metric", "waiting")}
            if "target" in data:
                one["target"] = data.pop("target")
            data["metrics"] = [one]
        return data

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalingPolicy:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) cannot exceed max_replicas "
                             f"({self.max_replicas})")
        names = [m.metric for m in self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"metric {', '.join(repr(d) for d in dupes)} listed twice")
        return self

    def to_spec(self) -> HPASpec:
        """The HPA this policy describes (what the algorithm, the simulator and the renderer use)."""
        return HPASpec(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            metrics=tuple(MetricSpec(m.info.name, m.value, m.info.kind) for m in self.metrics),
            behavior=self.behavior.to_behavior() if self.behavior is not None else None,
            tolerance=self.tolerance,
            downscale_stabilization_s=DEFAULT_DOWNSCALE_STABILIZATION_S,
        )

    def label(self) -> str:
        """A short name: 'waiting:3', 'waiting:3+kv:0.8'."""
        return "+".join(f"{m.metric}:{m.value:g}" for m in self.metrics)


def parse_policy(text: str) -> AutoscalingPolicy:
    """The inline form: ``METRIC:TARGET[,METRIC:TARGET...][,min=N][,max=N]`` (e.g. ``waiting:3``,
    ``kv:0.8,max=8``); a bare metric takes its default target."""
    data: dict[str, Any] = {"metrics": []}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part:
            key, _, value = part.partition("=")
            keys = {"min": "min_replicas", "max": "max_replicas"}
            if key.strip() not in keys:
                raise ConfigError(f"policy '{text}': unknown option '{key}'; use min=N or max=N")
            data[keys[key.strip()]] = value.strip()
            continue
        metric, sep, target = part.partition(":")
        entry: dict[str, Any] = {"metric": metric.strip()}
        if sep:
            entry["target"] = target.strip()
        data["metrics"].append(entry)
    if not data["metrics"]:
        del data["metrics"]
    return validate(AutoscalingPolicy, data, f"policy '{text}'")


def load_policy(spec: str | Path) -> AutoscalingPolicy:
    """A policy from a YAML file (an ``autoscaling:`` section, or the section's keys at the top)
    or from the inline form (``waiting:3``)."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        data = read_yaml_mapping(path, "policy file")
        section = data.get("autoscaling", data) if isinstance(data, dict) else data
        if not isinstance(section, dict):
            raise ConfigError(f"policy file '{path}': 'autoscaling' must be a mapping")
        return validate(AutoscalingPolicy, section, f"policy file '{path}' (autoscaling)")
    return parse_policy(str(spec))
