"""The autoscaling manifests come from the one policy object: HPA, KEDA ScaledObject, CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inferstack.autoscale import AutoscalingPolicy, load_policy
from inferstack.cli import main
from inferstack.errors import ConfigError
from inferstack.kube import RenderSettings, render, validate_objects
from inferstack.kube.autoscaling import hpa, scaled_object

# Without the gateway, so these tests read only the autoscaling pieces (the epp-queue tests turn it on).
BASE = {"model": "qwen3-32b", "accelerator": "h100", "model_bucket": "acme-llm-weights", "project": "acme-prod",
        "gateway": {"enabled": False}}
GATEWAY = {"gateway": {"enabled": True}}


def rendered(**kw: Any) -> list[dict[str, Any]]:
    objects = render(RenderSettings(**{**BASE, **kw})).objects()
    assert validate_objects(objects) == []
    return [o for o in objects if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]


def test_the_render_policy_is_the_autoscale_policy() -> None:
    settings = RenderSettings(**BASE, autoscaling={"metric": "waiting", "target": 3, "max_replicas": 6})
    assert isinstance(settings.autoscaling, AutoscalingPolicy)
    spec = settings.autoscaling.to_spec()
    (obj,) = rendered(autoscaling={"metric": "waiting", "target": 3, "max_replicas": 6})
    assert obj["spec"]["maxReplicas"] == spec.max_replicas == 6
    assert obj["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "3"


def test_several_metrics_and_a_full_behavior_render_like_the_algorithm_reads_them() -> None:
    policy = {
        "min_replicas": 2, "max_replicas": 8,
        "metrics": [{"metric": "waiting", "target": 3}, {"metric": "running", "target": 48},
                    {"metric": "kv", "target": 0.75}],
        "behavior": {
            "scale_up": {"policies": [{"type": "Pods", "value": 2, "period_s": 60}]},
            "scale_down": {"stabilization_window_s": 600, "select_policy": "Min", "tolerance": 0.2,
                           "policies": [{"type": "Pods", "value": 1, "period_s": 120},
                                        {"type": "Percent", "value": 10, "period_s": 120}]},
        },
    }
    (obj,) = rendered(autoscaling=policy)
    spec = obj["spec"]
    assert spec["minReplicas"] == 2 and spec["maxReplicas"] == 8
    assert [m["pods"]["metric"]["name"].split("|")[1] for m in spec["metrics"]] == [
        "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"]
    assert [m["pods"]["target"]["averageValue"] for m in spec["metrics"]] == ["3", "48", "750m"]
    assert spec["behavior"]["scaleUp"] == {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                                           "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}
    assert spec["behavior"]["scaleDown"]["selectPolicy"] == "Min"
    assert spec["behavior"]["scaleDown"]["tolerance"] == "200m"
    assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600


def test_keda_scaled_object_validates_against_keda_crd_and_replaces_the_hpa() -> None:
    policy = {"metric": "waiting", "target": 3, "max_replicas": 5, "autoscaler": "keda",
              "behavior": {"scale_down": {"stabilization_window_s": 120}}}
    (obj,) = rendered(autoscaling=policy)
    assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["kind"] == "ScaledObject"
    spec = obj["spec"]
    assert spec["minReplicaCount"] == 1 and spec["maxReplicaCount"] == 5 and spec["pollingInterval"] == 15
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == "https://monitoring.googleapis.com/v1/projects/acme-prod/location/global/prometheus"
    assert meta["query"].startswith("sum(vllm:num_requests_waiting{namespace=\"inferstack\"")
    assert meta["threshold"] == "3"
    assert trigger["authenticationRef"] == {"name": "gmp-workload-identity"}
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 120


def test_keda_object_with_a_bad_field_is_caught_by_the_shipped_crd() -> None:
    stack = render(RenderSettings(**BASE, autoscaling={"autoscaler": "keda"})).stack
    obj = scaled_object(stack)
    obj["spec"]["triggers"][0]["metricTyp"] = "Value"
    issues = validate_objects([obj])
    assert issues and "metricTyp" in str(issues[0])


def test_keda_needs_a_project_or_a_prometheus_address() -> None:
    settings = {k: v for k, v in BASE.items() if k != "project"}
    with pytest.raises(ConfigError, match="--project"):
        render(RenderSettings(**settings, autoscaling={"autoscaler": "keda"}))
    objs = render(RenderSettings(**settings, autoscaling={
        "autoscaler": "keda", "prometheus_address": "http://prometheus.monitoring:9090",
        "keda_authentication": None})).objects()
    (so,) = [o for o in objs if o["kind"] == "ScaledObject"]
    assert so["spec"]["triggers"][0]["metadata"]["serverAddress"] == "http://prometheus.monitoring:9090"
    assert "authenticationRef" not in so["spec"]["triggers"][0]


def test_epp_queue_is_an_external_pool_metric_with_a_value_target() -> None:
    (obj,) = rendered(**GATEWAY, autoscaling={"metric": "epp-queue", "target": 4})
    (metric,) = obj["spec"]["metrics"]
    name = obj["spec"]["scaleTargetRef"]["name"]
    assert metric == {
        "type": "External",
        "external": {
            "metric": {"name": "prometheus.googleapis.com|inference_pool_average_queue_size|gauge",
                       "selector": {"matchLabels": {"metric.labels.name": name}}},
            "target": {"type": "Value", "value": "4"},
        },
    }
    (keda,) = rendered(**GATEWAY, autoscaling={"metric": "epp-queue", "target": 4, "autoscaler": "keda"})
    assert keda["spec"]["triggers"][0]["metricType"] == "Value"
    assert f'name="{name}"' in keda["spec"]["triggers"][0]["metadata"]["query"]


def test_what_kubernetes_cannot_do_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="min_replicas has value 0 with only per-pod metrics"):
        render(RenderSettings(**BASE, autoscaling={"min_replicas": 0}))
    with pytest.raises(ConfigError, match="epp-queue.*gateway.enabled"):
        render(RenderSettings(**BASE, autoscaling={"metric": "epp-queue"}))


def test_scale_from_zero_on_the_pool_metric_starts_with_one_replica() -> None:
    objs = render(RenderSettings(**{**BASE, **GATEWAY}, autoscaling={"min_replicas": 0, "metric": "epp-queue"})).objects()
    assert [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "vllm-h100-qwen3-32b"][0][
        "spec"]["replicas"] == 1


def test_lws_is_the_scale_target_across_nodes() -> None:
    stack = render(RenderSettings(**{**BASE, "model": "llama-3.3-70b-instruct"}, nodes=2)).stack
    assert hpa(stack)["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"
    assert scaled_object(stack)["spec"]["scaleTargetRef"]["apiVersion"] == "leaderworkerset.x-k8s.io/v1"


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        (["--autoscale-min", "5", "--autoscale-max", "2"], "min_replicas (5) cannot exceed max_replicas (2)"),
        (["--autoscale-target", "0"], "'autoscaling.metrics.0.target' has value 0.0"),
        (["--autoscale-metric", "running"], "metric 'running' needs a target"),
    ],
)
def test_cli_autoscale_flags_fail_naming_key_and_value(capsys, tmp_path: Path, argv: list[str], bad: str) -> None:  # type: ignore[no-untyped-def]
    code = main(["render", "--model", "qwen3-32b", "--accelerator", "h100", "--bucket", "acme-llm-weights",
                 "--no-gateway", "--output", str(tmp_path), *argv])
    _, err = capsys.readouterr()
    assert code == 2 and bad in err, err


def test_cli_autoscale_metric_and_target_shape_the_hpa(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code = main(["render", "--model", "qwen3-32b", "--accelerator", "h100", "--bucket", "acme-llm-weights",
                 "--no-gateway", "--output", str(tmp_path), "--check", "--autoscale-metric", "running",
                 "--autoscale-target", "32", "--autoscale-min", "2", "--autoscale-max", "6"])
    out, err = capsys.readouterr()
    assert code == 0, err
    (doc,) = list(yaml.safe_load_all((tmp_path / "autoscaling.yaml").read_text()))
    assert doc["spec"]["minReplicas"] == 2 and doc["spec"]["maxReplicas"] == 6
    assert doc["spec"]["metrics"][0]["pods"]["metric"]["name"].endswith("|vllm:num_requests_running|gauge")
    assert doc["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "32"


def test_cli_target_alone_keeps_the_configured_metric_and_keda_flag(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "render.yaml"
    config.write_text("model: qwen3-32b\naccelerator: h100\nautoscaling:\n  metric: kv\n")
    out_dir = tmp_path / "out"
    code = main(["render", "--config", str(config), "--bucket", "acme-llm-weights", "--project", "acme-prod",
                 "--no-gateway", "--output", str(out_dir), "--check", "--autoscale-target", "0.6",
                 "--autoscaler", "keda"])
    _, err = capsys.readouterr()
    assert code == 0, err
    (doc,) = list(yaml.safe_load_all((out_dir / "autoscaling.yaml").read_text()))
    assert doc["kind"] == "ScaledObject"
    assert doc["spec"]["triggers"][0]["metadata"]["threshold"] == "0.6"
    assert "vllm:kv_cache_usage_perc" in doc["spec"]["triggers"][0]["metadata"]["query"]


def test_a_stack_policy_file_renders_the_same_hpa(tmp_path: Path) -> None:
    """The 'autoscaling:' section of a stack config, loaded as a policy, is what render uses."""
    stack_yaml = tmp_path / "stack.yaml"
    stack_yaml.write_text("replicas: 1\nautoscaling:\n  max_replicas: 3\n  metrics: [{metric: waiting, target: 3}]\n")
    policy = load_policy(stack_yaml)
    (obj,) = rendered(autoscaling=policy.model_dump())
    assert obj["spec"]["maxReplicas"] == 3
    assert obj["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "3"


def test_old_and_new_key_together_is_an_error() -> None:
    with pytest.raises(ConfigError, match="both 'autoscale'"):
        RenderSettings(**BASE, autoscale={}, autoscaling={})
