"""The autoscaling policy: one typed section, clear errors, one HPASpec."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferstack.autoscale import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    AutoscalingPolicy,
    MetricSpec,
    ScalingPolicy,
    load_policy,
    parse_policy,
)
from inferstack.stack.config import load_config
from inferstack.configfile import validate
from inferstack.errors import ConfigError


def policy(**data: object) -> AutoscalingPolicy:
    return validate(AutoscalingPolicy, dict(data), "stack.yaml (autoscaling)")


def test_defaults_are_one_waiting_metric_and_no_behavior() -> None:
    spec = policy().to_spec()
    assert (spec.min_replicas, spec.max_replicas, spec.tolerance) == (1, 4, 0.1)
    assert spec.metrics == (MetricSpec("vllm:num_requests_waiting", 5.0, "pods"),)
    assert spec.behavior is None  # an HPA without behavior


@pytest.mark.parametrize(
    ("metric", "series", "kind", "target"),
    [
        ("waiting", "vllm:num_requests_waiting", "pods", 5.0),
        ("kv", "vllm:kv_cache_usage_perc", "pods", 0.8),
        ("epp-queue", "inference_pool_average_queue_size", "pool", 5.0),
        ("num_requests_waiting", "vllm:num_requests_waiting", "pods", 5.0),  # the old render names
        ("kv_cache_usage", "vllm:kv_cache_usage_perc", "pods", 0.8),
        ("vllm:num_requests_running", "vllm:num_requests_running", "pods", None),
    ],
)
def test_metric_names_map_to_series(metric: str, series: str, kind: str, target: float | None) -> None:
    data: dict[str, object] = {"metric": metric} if target is not None else {"metric": metric, "target": 7}
    (m,) = policy(metrics=[data]).to_spec().metrics
    assert (m.name, m.kind, m.target) == (series, kind, target if target is not None else 7)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"min_replicas": 3, "max_replicas": 2},
         "Value error, min_replicas (3) cannot exceed max_replicas (2)"),
        ({"metrics": [{"metric": "waiting", "target": 0}]},
         "'metrics.0.target' has value 0; Input should be greater than 0"),
        ({"metrics": [{"metric": "waiting", "target": -2}]}, "'metrics.0.target' has value -2"),
        ({"metrics": [{"metric": "queue_depth", "target": 3}]},
         "'metrics.0.metric' has value 'queue_depth'; Value error, unknown metric 'queue_depth': one of "
         "waiting, running, kv, epp-queue"),
        ({"metrics": [{"metric": "running"}]}, "metric 'running' needs a target"),
        ({"metrics": [{"metric": "kv", "target": 80}]}, "target has value 80 for metric 'kv', a fraction"),
        ({"metrics": [{"metric": "waiting"}, {"metric": "num_requests_waiting"}]}, "metric 'waiting' listed twice"),
        ({"metric": "waiting", "metrics": []}, "either 'metric'/'target'"),
        ({"max_replica": 3}, "unknown key 'max_replica'"),
        ({"behavior": {"scale_up": {"policies": [{"type": "Pod", "value": 1, "period_s": 60}]}}},
         "'behavior.scale_up.policies.0.type' has value 'Pod'"),
        ({"behavior": {"scale_down": {"policies": [{"type": "Pods", "value": 1, "period_s": 3600}]}}},
         "'behavior.scale_down.policies.0.period_s' has value 3600"),
        ({"behavior": {"scale_down": {"select_policy": "Maximum"}}}, "'behavior.scale_down.select_policy'"),
        ({"min_replicas": -1}, "'min_replicas' has value -1"),
    ],
)
def test_errors_name_the_key_and_the_value(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        policy(**data)
    assert message in str(err.value), str(err.value)


def test_shorthand_metric_and_target() -> None:
    assert policy(metric="kv", target=0.7).to_spec().metrics == (MetricSpec("vllm:kv_cache_usage_perc", 0.7),)
    assert policy(target=3).to_spec().metrics == (MetricSpec("vllm:num_requests_waiting", 3.0),)


def test_behavior_fills_what_is_omitted_with_the_kubernetes_defaults() -> None:
    b = policy(behavior={"scale_down": {"stabilization_window_s": 60}}).to_spec().behavior
    assert b is not None
    assert b.scale_up == DEFAULT_SCALE_UP
    assert b.scale_down.stabilization_window_s == 60 and b.scale_down.policies == DEFAULT_SCALE_DOWN.policies
    b2 = policy(behavior={"scale_up": {"select_policy": "Disabled"}}).to_spec().behavior
    assert b2 is not None and b2.scale_up.select_policy == "Disabled" and b2.scale_down == DEFAULT_SCALE_DOWN
    b3 = policy(behavior={"scale_up": {"policies": [{"type": "Percent", "value": 50, "period_s": 30}]}}).to_spec().behavior
    assert b3 is not None and b3.scale_up.policies == (ScalingPolicy("Percent", 50, 30),)


@pytest.mark.parametrize(
    ("text", "metrics", "lo", "hi"),
    [
        ("waiting:3", [("vllm:num_requests_waiting", 3.0)], 1, 4),
        ("kv:0.8,max=8", [("vllm:kv_cache_usage_perc", 0.8)], 1, 8),
        ("waiting:3,running:48,min=2,max=6",
         [("vllm:num_requests_waiting", 3.0), ("vllm:num_requests_running", 48.0)], 2, 6),
        ("epp-queue", [("inference_pool_average_queue_size", 5.0)], 1, 4),
    ],
)
def test_inline_policies(text: str, metrics: list[tuple[str, float]], lo: int, hi: int) -> None:
    spec = parse_policy(text).to_spec()
    assert [(m.name, m.target) for m in spec.metrics] == metrics
    assert (spec.min_replicas, spec.max_replicas) == (lo, hi)


@pytest.mark.parametrize(
    ("text", "message"),
    [("bogus:1", "unknown metric 'bogus'"), ("waiting:x", "'metrics.0.target' has value 'x'"),
     ("waiting:3,limit=2", "unknown option 'limit'"), ("waiting:3,min=5,max=2", "min_replicas (5) cannot exceed")],
)
def test_inline_policy_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        parse_policy(text)
    assert message in str(err.value) and text in str(err.value)


def test_load_policy_from_a_stack_yaml_or_a_bare_section(tmp_path: Path) -> None:
    stack = tmp_path / "stack.yaml"
    stack.write_text("replicas: 2\nautoscaling:\n  max_replicas: 2\n  metric: waiting\n  target: 3\n")
    assert load_policy(stack).to_spec().max_replicas == 2
    bare = tmp_path / "p.yml"
    bare.write_text("metrics: [{metric: running, target: 10}]\n")
    assert load_policy(bare).label() == "running:10"
    bad = tmp_path / "bad.yaml"
    bad.write_text("autoscaling:\n  min_replicas: 3\n  max_replicas: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml.*min_replicas \\(3\\) cannot exceed max_replicas \\(1\\)"):
        load_policy(bad)
    assert load_policy("waiting:4").label() == "waiting:4"


def test_the_stack_config_carries_an_optional_autoscaling_section(tmp_path: Path) -> None:
    assert load_config().autoscaling is None
    path = tmp_path / "stack.yaml"
    path.write_text("replicas: 1\nautoscaling:\n  min_replicas: 1\n  max_replicas: 2\n  metric: waiting\n  target: 3\n")
    cfg = load_config(path)
    assert cfg.autoscaling is not None and cfg.autoscaling.to_spec().max_replicas == 2
    path.write_text("autoscaling:\n  metrics: [{metric: kv, target: 0}]\n")
    with pytest.raises(ConfigError, match="'autoscaling.metrics.0.target' has value 0"):
        load_config(path)
