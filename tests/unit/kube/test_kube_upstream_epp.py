"""The upstream EndpointPickerConfig: what we render passes the offline checker, and the checker
catches each rule of the upstream loader (GIE v1.5.0) it claims to check."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from inferstack.errors import ConfigError
from inferstack.gateway.settings import SchedulerSettings, ScorerSettings
from inferstack.kube.upstream_epp import PLUGIN_TYPES, check_picker_config, upstream_picker_config

# The GIE v1.5.0 Helm chart's default-plugins.yaml (config/charts/epplib/templates/_config.yaml),
# with the picker its loader would inject made explicit: a config the real loader accepts.
CHART_DEFAULT: dict[str, Any] = {
    "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
    "kind": "EndpointPickerConfig",
    "plugins": [
        {"type": "queue-scorer"},
        {"type": "kv-cache-utilization-scorer"},
        {"type": "prefix-cache-scorer"},
        {"type": "metrics-data-source", "parameters": {"scheme": "http", "path": "/metrics",
                                                       "insecureSkipVerify": True}},
        {"type": "core-metrics-extractor"},
        {"type": "max-score-picker"},
    ],
    "schedulingProfiles": [{"name": "default", "plugins": [
        {"pluginRef": "queue-scorer", "weight": 2},
        {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
        {"pluginRef": "prefix-cache-scorer", "weight": 3},
        {"pluginRef": "max-score-picker"},
    ]}],
}


def test_rendered_config_and_the_charts_default_pass() -> None:
    assert check_picker_config(upstream_picker_config()) == []
    assert check_picker_config(CHART_DEFAULT) == []


def test_rendered_config_names_only_registered_types() -> None:
    config = upstream_picker_config()
    assert {p["type"] for p in config["plugins"]} <= PLUGIN_TYPES
    # our default's no-hit-lru has no GIE v1.5.0 counterpart and is left out
    assert [p["pluginRef"] for p in config["schedulingProfiles"][0]["plugins"]] == [
        "prefix-cache-scorer", "queue-scorer", "kv-cache-utilization-scorer", "max-score-picker"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(cfg: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node: Any = cfg
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(leaf) if leaf.isdigit() else leaf]
        else:
            node[int(leaf) if leaf.isdigit() else leaf] = value
    return change


_DELETE = object()

BAD: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown type": (_set("plugins.0.type", "queue-depth-scorer"),
                     "plugins[0].type 'queue-depth-scorer' is not registered upstream"),
    "missing type": (_set("plugins.0.type", ""), "plugins[0].type is missing"),
    "dangling ref": (_set("schedulingProfiles.0.plugins.0.pluginRef", "queue"),
                     "pluginRef 'queue' names no plugin"),
    "missing weight": (_set("schedulingProfiles.0.plugins.1.weight", _DELETE),
                       "scorer 'kv-cache-utilization-scorer' has weight None; give a number > 0"),
    "zero weight": (_set("schedulingProfiles.0.plugins.2.weight", 0),
                    "scorer 'prefix-cache-scorer' has weight 0; must be > 0"),
    "string weight": (_set("schedulingProfiles.0.plugins.2.weight", "3"), "has weight '3'"),
    "weight on picker": (_set("schedulingProfiles.0.plugins.3.weight", 1),
                         "'max-score-picker' is a max-score-picker, not a scorer"),
    "no picker": (_set("schedulingProfiles.0.plugins.3", _DELETE), "has 0 pickers; must have exactly one"),
    "unknown top key": (_set("scheduling", {}), "(top level): unknown key 'scheduling'"),
    "unknown plugin key": (_set("plugins.0.weight", 1), "plugins[0]: unknown key 'weight'"),
    "wrong apiVersion": (_set("apiVersion", "llm-d.ai/v1alpha1"), "apiVersion has value 'llm-d.ai/v1alpha1'"),
    "no profiles": (_set("schedulingProfiles", []), "schedulingProfiles must be a non-empty list"),
    "unknown gate": (_set("featureGates", ["fastPath"]), "featureGates: 'fastPath' is unknown"),
    "data source ref": (_set("dataLayer", {"sources": [{"pluginRef": "queue-scorer", "extractors": []}]}),
                        "'queue-scorer' is a queue-scorer, not a data source"),
    "detector ref": (_set("saturationDetector", {"pluginRef": "nope"}), "saturationDetector.pluginRef 'nope'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_configs_are_refused_with_the_key_value_and_rule(case: str) -> None:
    change, expected = BAD[case]
    config = copy.deepcopy(CHART_DEFAULT)
    change(config)
    problems = check_picker_config(config)
    assert any(expected in p for p in problems), problems


def test_duplicate_names_and_two_pickers() -> None:
    config = copy.deepcopy(CHART_DEFAULT)
    config["plugins"].append({"type": "random-picker"})
    config["plugins"].append({"type": "queue-scorer"})
    config["schedulingProfiles"][0]["plugins"].append({"pluginRef": "random-picker"})
    problems = check_picker_config(config)
    assert any("duplicate plugin name 'queue-scorer'" in p for p in problems)
    assert any("has 2 pickers" in p for p in problems)
    config["plugins"][-1]["name"] = "queue-2"
    assert not any("duplicate" in p for p in check_picker_config(config))


def test_a_profile_may_only_reference_scheduling_plugins() -> None:
    config = copy.deepcopy(CHART_DEFAULT)
    config["schedulingProfiles"][0]["plugins"].append({"pluginRef": "metrics-data-source"})
    assert any("not a filter, scorer or picker" in p for p in check_picker_config(config))


def test_two_profiles_need_a_real_profile_handler() -> None:
    config = copy.deepcopy(CHART_DEFAULT)
    config["schedulingProfiles"].append(copy.deepcopy(config["schedulingProfiles"][0]) | {"name": "prefill"})
    assert any("profile handler" in p for p in check_picker_config(config))
    config["plugins"].append({"type": "single-profile-handler"})
    assert any("single-profile-handler cannot serve" in p for p in check_picker_config(config))


def test_not_a_mapping() -> None:
    assert check_picker_config(["plugins"]) == ["the config must be a mapping, not list"]


def test_our_settings_without_an_upstream_equivalent_are_refused() -> None:
    with pytest.raises(ConfigError, match="picker 'round-robin' has no upstream equivalent"):
        upstream_picker_config(SchedulerSettings(picker="round-robin"))
    with pytest.raises(ConfigError, match="filters \\['fresh-metrics'\\] have no upstream equivalent"):
        upstream_picker_config(SchedulerSettings(filters=["fresh-metrics"]))
    with pytest.raises(ConfigError, match="scorer 'custom' has no upstream equivalent"):
        upstream_picker_config(SchedulerSettings(scorers=[ScorerSettings(type="custom")]))


def test_weights_carry_over() -> None:
    config = upstream_picker_config(SchedulerSettings(scorers=[ScorerSettings(type="queue", weight=2),
                                                               ScorerSettings(type="lora", weight=0.5)]))
    assert config["schedulingProfiles"][0]["plugins"][:2] == [
        {"pluginRef": "queue-scorer", "weight": 2}, {"pluginRef": "lora-affinity-scorer", "weight": 0.5}]
    assert check_picker_config(config) == []


def test_flow_control_renders_upstreams_feature_gate_and_its_bounds_and_the_checker_knows_the_section():
    from inferstack.gateway.settings import FlowControlSettings

    flow = FlowControlSettings(enabled=True, max_requests=64, max_wait_s=8)
    config = upstream_picker_config(flow=flow)
    assert check_picker_config(config) == []
    assert config["featureGates"] == ["flowControl"]
    assert config["flowControl"] == {"maxRequests": 64, "defaultRequestTTL": "8s", "defaultPriorityBand": {
        "fairnessPolicyRef": "round-robin-fairness-policy", "orderingPolicyRef": "fcfs-ordering-policy"}}
    assert "flowControl" not in upstream_picker_config(flow=FlowControlSettings())
    bad = {**config, "featureGates": [], "flowControl": {
        "maxRequests": -1, "defaultRequestTTL": 30, "priorityBands": [{"priority": 1, "fairnessPolicyRef": "nope",
                                                                       "orderingPolicyRef": "round-robin-fairness-policy",
                                                                       "color": "red"}]}}
    problems = "\n".join(check_picker_config(bad))
    for expected in ("featureGates lacks 'flowControl'", "maxRequests has value -1", "defaultRequestTTL has value 30",
                     "fairnessPolicyRef 'nope' names no plugin", "is a round-robin-fairness-policy, not an ordering",
                     "unknown key 'color'"):
        assert expected in problems, problems


def test_render_carries_flow_control_to_either_picker_within_gkes_callout_timeout():
    import yaml

    from inferstack.kube import RenderSettings, render, validate_objects

    base = {"model": "gemma-3-1b-it", "accelerator": "l4", "model_bucket": "acme-llm-weights"}
    flow = {"enabled": True, "max_requests_per_endpoint": 8, "max_wait_s": 5}
    for epp in ("upstream", "inferstack"):
        rendered = render(RenderSettings(**base, gateway={"epp": epp, "flow_control": flow},
                                         images={"epp": "example.com/inferstack:1"}))
        assert validate_objects(rendered.objects()) == []
        (cm,) = [o for o in rendered.files["gateway.yaml"] if o["kind"] == "ConfigMap"]
        config = yaml.safe_load(next(iter(cm["data"].values())))
        if epp == "upstream":
            assert config["featureGates"] == ["flowControl"] and config["flowControl"]["defaultRequestTTL"] == "5s"
        else:
            assert config["flow_control"]["max_requests_per_endpoint"] == 8
    with pytest.raises(ValueError, match="max_wait_s has value 30; on GKE at most 9"):
        RenderSettings(**base, gateway={"flow_control": {"enabled": True, "max_wait_s": 30}})
