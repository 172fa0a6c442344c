"""The autoscaling manifests, built from the same policy object the local algorithm runs
(``inferstack.autoscale.AutoscalingPolicy`` -> ``HPASpec``): a HorizontalPodAutoscaler
(autoscaling/v2) or, with ``autoscaling.autoscaler: keda``, a KEDA ScaledObject (keda.sh/v1alpha1),
never both (KEDA creates and owns its own HPA).

- HPA: per-pod vLLM gauges are ``Pods`` metrics with AverageValue targets, read from Google Managed
  Prometheus through the custom metrics Stackdriver adapter (``prometheus.googleapis.com|<series>|
  gauge``); the endpoint picker's pool average (``epp-queue``) is an ``External`` metric with a
  Value target, selected by the pool's ``name`` label. ``behavior`` is rendered only when the
  policy has one (omitted = Kubernetes' defaults, as the local algorithm then runs them too).
- ScaledObject: one ``prometheus`` trigger per metric against Managed Prometheus' query API (or
  ``autoscaling.prometheus_address``): per-pod gauges are summed over the pods with an AverageValue
  metric type (KEDA's HPA divides by the target, i.e. the same per-pod average target); the pool
  average is a Value. The policy's ``behavior`` goes to ``advanced.horizontalPodAutoscalerConfig``.

Invariants: what a policy cannot mean on Kubernetes is refused with the key and the reason
(min_replicas 0 without a pool metric, epp-queue without the upstream picker); rendering is
deterministic.
"""

from __future__ import annotations

from typing import Any

from inferstack.autoscale.hpa import HPASpec, MetricSpec, ScalingRules
from inferstack.errors import ConfigError
from inferstack.kube.stack import Stack

__all__ = ["autoscaling_objects", "gmp_metric_name", "hpa", "quantity", "scaled_object"]

_POOL_LABEL = "name"  # the EPP's pool metrics carry the InferencePool name in this label


def gmp_metric_name(series: str) -> str:
    """A Prometheus gauge as the custom metrics Stackdriver adapter names it."""
    return f"prometheus.googleapis.com|{series}|gauge"


def quantity(value: float) -> str:
    """A Kubernetes quantity: an integer, else milli-units (0.8 -> 800m)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def _spec(stack: Stack) -> HPASpec:
    policy = stack.settings.autoscaling
    spec = policy.to_spec()
    if spec.min_replicas == 0 and not any(m.kind == "pool" for m in spec.metrics):
        raise ConfigError(
            "autoscaling.min_replicas has value 0 with only per-pod metrics; Kubernetes scales from zero "
            "only on an Object or External metric (feature gate HPAScaleToZero, or KEDA): add the "
            "metric 'epp-queue' or use min_replicas >= 1"
        )
    if any(m.kind == "pool" for m in spec.metrics):
        gw = stack.settings.gateway
        if not gw.enabled or gw.epp != "upstream":
            raise ConfigError(
                "autoscaling metric 'epp-queue' reads the upstream endpoint picker's "
                "inference_pool_average_queue_size; it needs gateway.enabled with gateway.epp 'upstream' "
                f"(now enabled={gw.enabled}, epp={gw.epp!r})"
            )
    return spec


def _target_ref(stack: Stack) -> dict[str, str]:
    if stack.multi_node:
        return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": stack.name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": stack.name}


def _rules(rules: ScalingRules) -> dict[str, Any]:
    out: dict[str, Any] = {
        "stabilizationWindowSeconds": int(rules.stabilization_window_s),
        "selectPolicy": rules.select_policy,
        "policies": [{"type": p.type, "value": p.value, "periodSeconds": p.period_s} for p in rules.policies],
    }
    if rules.tolerance is not None:
        out["tolerance"] = quantity(rules.tolerance)
    return out


def _behavior(spec: HPASpec) -> dict[str, Any] | None:
    if spec.behavior is None:
        return None
    return {"scaleUp": _rules(spec.behavior.scale_up), "scaleDown": _rules(spec.behavior.scale_down)}


def _hpa_metric(stack: Stack, metric: MetricSpec) -> dict[str, Any]:
    if metric.kind == "pods":
        return {
            "type": "Pods",
            "pods": {
                "metric": {"name": gmp_metric_name(metric.name)},
                "target": {"type": "AverageValue", "averageValue": quantity(metric.target)},
            },
        }
    return {
        "type": "External",
        "external": {
            "metric": {
                "name": gmp_metric_name(metric.name),
                "selector": {"matchLabels": {f"metric.labels.{_POOL_LABEL}": stack.name}},
            },
            "target": {"type": "Value", "value": quantity(metric.target)},
        },
    }


def hpa(stack: Stack) -> dict[str, Any]:
    """The HorizontalPodAutoscaler for the vLLM workload."""
    spec = _spec(stack)
    body: dict[str, Any] = {
        "scaleTargetRef": _target_ref(stack),
        "minReplicas": spec.min_replicas,
        "maxReplicas": spec.max_replicas,
        "metrics": [_hpa_metric(stack, m) for m in spec.metrics],
    }
    behavior = _behavior(spec)
    if behavior is not None:
        body["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": stack.meta(stack.name, "autoscaler"),
        "spec": body,
    }


def _prometheus_address(stack: Stack) -> str:
    auto = stack.settings.autoscaling
    if auto.prometheus_address:
        return auto.prometheus_address
    if stack.settings.project is None:
        raise ConfigError(
            "autoscaling.autoscaler has value 'keda', which queries Google Managed Prometheus per "
            "project: pass --project PROJECT_ID (or set 'project', or autoscaling.prometheus_address "
            "for another Prometheus)"
        )
    return f"https://monitoring.googleapis.com/v1/projects/{stack.settings.project}/location/global/prometheus"


def _query(stack: Stack, metric: MetricSpec) -> str:
    ns = stack.namespace
    if metric.kind == "pods":
        # Managed Prometheus labels every series with the namespace and the PodMonitoring (job).
        return f'sum({metric.name}{{namespace="{ns}",job="{stack.name}"}})'
    return f'max({metric.name}{{namespace="{ns}",{_POOL_LABEL}="{stack.name}"}})'


def scaled_object(stack: Stack) -> dict[str, Any]:
    """The KEDA ScaledObject: the same policy through KEDA's prometheus scaler."""
    spec = _spec(stack)
    auto = stack.settings.autoscaling
    address = _prometheus_address(stack)
    triggers = []
    for m in spec.metrics:
        trigger: dict[str, Any] = {
            "type": "prometheus",
            "name": m.name.replace(":", "-").replace("_", "-"),
            "metricType": "AverageValue" if m.kind == "pods" else "Value",
            "metadata": {
                "serverAddress": address,
                "query": _query(stack, m),
                "threshold": f"{m.target:g}",
            },
        }
        if auto.keda_authentication:
            trigger["authenticationRef"] = {"name": auto.keda_authentication}
        triggers.append(trigger)
    body: dict[str, Any] = {
        "scaleTargetRef": _target_ref(stack),
        "minReplicaCount": spec.min_replicas,
        "maxReplicaCount": spec.max_replicas,
        "pollingInterval": max(1, round(auto.sync_period_s)),
        "triggers": triggers,
    }
    behavior = _behavior(spec)
    if behavior is not None:
        body["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": stack.meta(stack.name, "autoscaler"),
        "spec": body,
    }


def autoscaling_objects(stack: Stack) -> list[dict[str, Any]]:
    """What goes into autoscaling.yaml: the HPA, or the ScaledObject with ``autoscaler: keda``."""
    if stack.settings.autoscaling.autoscaler == "keda":
        return [scaled_object(stack)]
    return [hpa(stack)]
