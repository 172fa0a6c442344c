"""render --monitoring: the GMP Rules carry the local Prometheus's recording rules and alerts with the
PodMonitorings' job names, the batch service gets a PodMonitoring, the dashboards ride in a ConfigMap;
everything validates against the shipped CRDs and builds with kustomize."""

import json

from test_kube_render import kustomize

from inferstack.kube import RenderSettings, render, validate_objects, write
from inferstack.monitoring import ALERTS, RECORDING_RULES
from inferstack.monitoring.dashboards import render_files

IMAGE = "us-docker.pkg.dev/acme-prod/inference/inferstack:0.1.0"
BASE = {"model": "gemma-3-1b-it", "accelerator": "l4", "model_bucket": "acme-llm-weights"}


def test_monitoring_objects_validate_and_name_the_gmp_jobs(tmp_path):
    settings = RenderSettings(**BASE, gateway={"epp": "inferstack"}, images={"epp": IMAGE},
                              batch={"enabled": True}, monitoring={"enabled": True})
    rendered = render(settings)
    assert validate_objects(rendered.objects()) == []
    objs = {(o["kind"], o["metadata"]["name"]): o for o in rendered.files["monitoring.yaml"]}
    name = rendered.stack.name
    assert objs[("PodMonitoring", f"{name}-batch")]["spec"]["endpoints"][0]["port"] == "http"
    groups = objs[("Rules", f"{name}-rules")]["spec"]["groups"]
    assert [r["record"] for r in groups[0]["rules"]] == [r.record for r in RECORDING_RULES]
    alerts = {r["alert"]: r["expr"] for r in groups[1]["rules"]}
    assert set(alerts) == {a.name for a in ALERTS if not a.needs_envoy}  # GKE's gateway is not our Envoy
    assert f'up{{job="{name}"}}' in alerts["InferstackReplicaDown"]
    assert 'job="vllm"' not in "".join(alerts.values())
    data = objs[("ConfigMap", f"{name}-dashboards")]["data"]
    assert data == render_files() and all(json.loads(v)["panels"] for v in data.values())
    out = tmp_path / "out"
    write(rendered, out)
    assert "monitoring.yaml" in (out / "kustomization.yaml").read_text()
    kinds = [d["kind"] for d in kustomize(out)]
    assert "Rules" in kinds and kinds.count("PodMonitoring") == 3  # replicas, picker, batch


def test_without_the_flag_nothing_is_added():
    rendered = render(RenderSettings(**BASE))
    assert "monitoring.yaml" not in rendered.files
