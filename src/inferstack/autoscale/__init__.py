"""Autoscaling: the Kubernetes HPA algorithm (pure), the policy that drives it and renders the HPA,
and the policy simulator.

Public surface:

- ``AutoscalingPolicy`` (the ``autoscaling:`` YAML section), ``load_policy`` / ``parse_policy``
  (a YAML file or ``waiting:3``), ``METRICS`` (waiting, running, kv, epp-queue);
- ``HPASpec`` (``policy.to_spec()``), ``Autoscaler`` (``decide`` / ``record_scale`` / ``step`` with
  ``now`` passed in), ``PodSample`` (one replica's phase and metric values), ``Decision``
  (desired replicas, reason, ``message()``), and the pure pieces ``desired_from_metrics``,
  ``replicas_for_pods_metric``, ``replicas_for_pool_metric``, ``scale_up_limit``,
  ``scale_down_limit``;
- ``simulate`` / ``load_trace`` / ``SimSettings`` (the simulator). Command: ``inferstack autoscale
  simulate`` (``inferstack.commands.autoscale``).
"""

from inferstack.autoscale.hpa import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    DEFAULT_TOLERANCE,
    Autoscaler,
    Behavior,
    Decision,
    HPASpec,
    MetricProposal,
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
from inferstack.autoscale.policy import (
    METRICS,
    AutoscalingPolicy,
    BehaviorSettings,
    MetricTarget,
    ScalingPolicySettings,
    ScalingRulesSettings,
    load_policy,
    parse_policy,
)
from inferstack.autoscale.simulate import SimResult, SimSettings, Trace, load_trace, simulate

__all__ = [
    "DEFAULT_SCALE_DOWN",
    "DEFAULT_SCALE_UP",
    "DEFAULT_TOLERANCE",
    "METRICS",
    "Autoscaler",
    "AutoscalingPolicy",
    "Behavior",
    "BehaviorSettings",
    "Decision",
    "HPASpec",
    "MetricProposal",
    "MetricSpec",
    "MetricTarget",
    "PodSample",
    "ScaleEvent",
    "ScalingPolicy",
    "ScalingPolicySettings",
    "ScalingRules",
    "ScalingRulesSettings",
    "SimResult",
    "SimSettings",
    "Trace",
    "desired_from_metrics",
    "load_policy",
    "load_trace",
    "parse_policy",
    "replicas_for_pods_metric",
    "replicas_for_pool_metric",
    "scale_down_limit",
    "scale_up_limit",
    "simulate",
]
