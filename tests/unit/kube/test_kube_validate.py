"""Offline validation: it catches what it should, and every catalog combination that fits passes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from inferstack.errors import ConfigError
from inferstack.kube import KUBERNETES_VERSION, RenderSettings, render, validate_object, validate_objects
from inferstack.kube import validate as validate_module
from inferstack.models.catalog import ACCELERATORS, MODELS

SPECS = ("none", "ngram", "eagle", "eagle3")

BUCKET = "my-models"


def settings_of(**kw: Any) -> RenderSettings:
    """Render settings with the user's bucket (there is no default bucket)."""
    return RenderSettings(**{"model_bucket": BUCKET, **kw})


@pytest.fixture(scope="module")
def objs() -> list[dict[str, Any]]:
    return render(settings_of(model="llama-3.3-70b-instruct", accelerator="h100", spec="eagle3", nodes=2)).objects()


def mutated(objs: list[dict[str, Any]], kind: str, change: Any) -> dict[str, Any]:
    obj = copy.deepcopy(next(o for o in objs if o["kind"] == kind))
    change(obj)
    return obj


def test_states_the_kubernetes_version_and_ships_the_crd_schemas() -> None:
    assert KUBERNETES_VERSION == "1.33"
    shipped = {(g, v, k) for g, v, k in validate_module.shipped_schemas()}
    assert {
        ("inference.networking.k8s.io", "v1", "InferencePool"),
        ("inference.networking.x-k8s.io", "v1alpha2", "InferenceObjective"),
        ("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        ("gateway.networking.k8s.io", "v1", "Gateway"),
        ("monitoring.googleapis.com", "v1", "PodMonitoring"),
        ("leaderworkerset.x-k8s.io", "v1", "LeaderWorkerSet"),
        ("cloud.google.com", "v1", "ComputeClass"),
    } <= shipped


def test_every_kind_rendered_is_valid(objs: list[dict[str, Any]]) -> None:
    assert validate_objects(objs) == []
    kinds = {o["kind"] for o in objs}
    assert {"LeaderWorkerSet", "ComputeClass", "InferencePool", "HTTPRoute", "Job", "HorizontalPodAutoscaler"} <= kinds


@pytest.mark.parametrize(
    "kind, change, field, reason",
    [
        ("LeaderWorkerSet",
         lambda o: o["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0].update(imagee="x"),
         "spec.leaderWorkerTemplate.leaderTemplate.spec.containers[0]", "'imagee' was unexpected"),
        ("InferencePool", lambda o: o["spec"]["targetPorts"][0].update(number="abc"),
         "spec.targetPorts[0].number", "'abc' is not of type 'integer'"),
        ("HTTPRoute", lambda o: o["spec"].update(foo=1), "spec", "'foo' was unexpected"),
        ("ComputeClass", lambda o: o["spec"]["priorities"][0]["gpu"].update(cnt=1),
         "spec.priorities[0].gpu", "'cnt' was unexpected"),
        ("HorizontalPodAutoscaler", lambda o: o["spec"].update(minReplicas="one"), "spec.minReplicas", "'one'"),
        ("Job", lambda o: o["spec"]["template"]["spec"]["containers"][0]["env"][0].update(
            valueFrom={"secretKeyRef": {}}), "spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef",
         "'key' is a required property"),
        ("Gateway", lambda o: o["spec"].update(gatewayClassName=""), "spec.gatewayClassName", "non-empty"),
        ("InferenceObjective", lambda o: o["metadata"].update(name="Bad_Name"), "metadata.name", "DNS-1123"),
        ("Service", lambda o: o["metadata"].update(name="9svc"), "metadata.name", "DNS-1035"),
        ("ComputeClass", lambda o: o["metadata"].update(namespace="x"), "metadata.namespace", "cluster-scoped"),
        ("PodMonitoring", lambda o: o["metadata"].pop("namespace"), "metadata.namespace", "is required"),
        ("Deployment", lambda o: o["metadata"]["labels"].update(app="x" * 64), "metadata.labels.app", "label value"),
    ],
)
def test_problems_are_reported_with_object_field_and_reason(objs, kind, change, field, reason) -> None:  # type: ignore[no-untyped-def]
    obj = mutated(objs, kind, change)
    issues = validate_object(obj)
    assert issues, kind
    assert any(i.field == field and reason in i.reason for i in issues), [str(i) for i in issues]
    assert all(i.object.startswith(f"{kind}/") for i in issues)
    assert str(issues[0]).startswith(f"{kind}/")


def test_unknown_kinds_are_errors_not_silent_passes() -> None:
    issues = validate_object({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
    assert len(issues) == 1 and "no schema shipped for Widget example.com/v1" in issues[0].reason
    issues = validate_object({"apiVersion": "apps/v1", "kind": "Deploymnt", "metadata": {"name": "w"}})
    assert "no Kubernetes 1.33 schema" in issues[0].reason


def test_crd_schemas_are_made_strict_but_keep_open_maps() -> None:
    schema = validate_module._make_strict({
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {}},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    })
    assert schema["additionalProperties"] is False
    assert schema["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["open"]
    assert schema["properties"]["map"]["additionalProperties"] == {"type": "string"}


def _all_combinations() -> list[tuple[str, str, str]]:
    return [(m.name, a.short_name, s) for m in MODELS for a in ACCELERATORS for s in SPECS]


def test_every_catalog_combination_that_fits_renders_and_validates() -> None:
    """Property over the whole catalog: a combination either renders valid objects (with the
    gateway and autoscaling on and off), or is refused for a stated reason."""
    rendered = refused_fit = refused_head = 0
    for model, acc, spec in _all_combinations():
        for gateway in (True, False):
            for autoscale in (True, False):
                settings = settings_of(model=model, accelerator=acc, spec=spec,
                                          gateway={"enabled": gateway}, autoscaling={"enabled": autoscale})
                try:
                    result = render(settings)
                except ConfigError as exc:
                    if "does not fit" in str(exc):
                        refused_fit += 1
                    else:
                        assert f"no published {spec} head" in str(exc)
                        refused_head += 1
                    continue
                issues = validate_objects(result.objects())
                assert issues == [], (model, acc, spec, gateway, autoscale, [str(i) for i in issues[:5]])
                rendered += 1
    # 108 model x accelerator x method combinations x 4 gateway/autoscale variants.
    assert rendered == 108 * 4
    assert refused_fit == 12 * 4 and refused_head == 72 * 4


@pytest.mark.parametrize("model", ["llama-3.3-70b-instruct", "qwen3-32b", "gpt-oss-20b"])
@pytest.mark.parametrize("acc", ["l4", "h100", "h200", "rtx-pro-6000"])
def test_multi_node_variants_validate(model: str, acc: str) -> None:
    if (model, acc) == ("llama-3.3-70b-instruct", "l4"):
        # Pipeline stages do not speed up one sequence: 16 L4s decode 70B at ~17 tok/s.
        with pytest.raises(ConfigError, match="too slow"):
            render(settings_of(model=model, accelerator=acc, nodes=2))
        return
    result = render(settings_of(model=model, accelerator=acc, nodes=2,
                                   spec="eagle3" if model != "qwen3-32b" else "ngram"))
    assert validate_objects(result.objects()) == []


def test_yaml_round_trip_keeps_objects_valid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from inferstack.kube import write

    result = render(settings_of(model="gemma-3-27b-it", accelerator="v5e"))
    write(result, tmp_path)
    loaded = [d for f in sorted(tmp_path.glob("*.yaml")) if f.name != "kustomization.yaml"
              for d in yaml.safe_load_all(f.read_text()) if d]
    assert validate_objects(loaded) == []
    assert len(loaded) == sum(len(v) for v in result.files.values())
