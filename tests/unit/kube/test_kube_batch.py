"""render --batch: the batch service's objects validate, route /v1/files and /v1/batches to it, keep one
SQLite writer, and declare the sheddable objective to both pickers."""

import pytest
import yaml
from test_kube_render import kustomize

from inferstack.batch.kube import gateway_url_from_status
from inferstack.batch.settings import BatchSettings
from inferstack.cli import main
from inferstack.errors import ConfigError
from inferstack.kube import RenderSettings, render, resolve_stack, validate_objects, write
from inferstack.kube.batch import batch_objects

IMAGE = "us-docker.pkg.dev/acme-prod/inference/inferstack:0.1.0"
BASE = {"model": "gemma-3-1b-it", "accelerator": "l4", "model_bucket": "acme-llm-weights"}
OURS = {"gateway": {"epp": "inferstack"}, "images": {"epp": IMAGE}}


def _batch(**extra):
    settings = RenderSettings(**{**BASE, **OURS, "batch": {"enabled": True}, **extra})
    rendered = render(settings)
    assert validate_objects(rendered.objects()) == []
    return rendered, {(o["kind"], o["metadata"]["name"]): o for o in rendered.files["batch.yaml"]}


def test_batch_objects():
    rendered, objs = _batch()
    name = f"{rendered.stack.name}-batch"
    deployment = objs[("Deployment", name)]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert container["args"][:2] == ["batch", "serve"] and "--gateway-from-kubernetes" in container["args"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == name
    assert objs[("PersistentVolumeClaim", name)]["spec"]["accessModes"] == ["ReadWriteOnce"]
    route = objs[("HTTPRoute", name)]["spec"]["rules"][0]
    assert [m["path"]["value"] for m in route["matches"]] == ["/v1/files", "/v1/batches"]
    assert route["backendRefs"] == [{"name": name, "port": 8091}]
    assert objs[("InferenceObjective", name)]["spec"]["priority"] == -1
    config = BatchSettings.model_validate(yaml.safe_load(objs[("ConfigMap", name)]["data"]["batch.yaml"]))
    assert config.dispatch.objective == name and config.port == 8091  # the service reads it as it is


def test_our_picker_gets_the_batch_objective_and_the_upstream_one_the_crd():
    rendered, _ = _batch()
    epp_cm = next(o for o in rendered.files["gateway.yaml"] if o["kind"] == "ConfigMap")
    objectives = yaml.safe_load(epp_cm["data"]["epp.yaml"])["objectives"]
    assert {"name": f"{rendered.stack.name}-batch", "priority": -1} in objectives


def test_refusals_name_what_to_pass():
    stack = resolve_stack(RenderSettings(**BASE, batch={"enabled": True}))  # upstream picker, no image
    with pytest.raises(ConfigError, match="--epp-image"):
        batch_objects(stack)
    with pytest.raises(ConfigError, match="needs the gateway"):
        render(RenderSettings(**BASE, batch={"enabled": True, "image": IMAGE}, gateway={"enabled": False}))
    assert "batch.yaml" not in render(RenderSettings(**BASE, **OURS)).files


def test_kubectl_kustomize_builds_it(tmp_path):
    rendered, objs = _batch()
    write(rendered, tmp_path)
    built = {(o["kind"], o["metadata"]["name"]) for o in kustomize(tmp_path)}
    assert set(objs) <= built


def test_cli_flag_and_a_fixed_gateway_url(tmp_path):
    config = tmp_path / "render.yaml"
    config.write_text(yaml.safe_dump({"batch": {"gateway_url": "http://10.0.0.7", "storage_gib": 50}}))
    out = tmp_path / "out"
    assert main(["render", "--model", "gemma-3-1b-it", "--accelerator", "l4", "--bucket", "acme-llm-weights",
                 "--batch", "--epp", "inferstack", "--epp-image", IMAGE, "--config", str(config),
                 "--output", str(out), "--check"]) == 0
    docs = list(yaml.safe_load_all((out / "batch.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert "--gateway-from-kubernetes" not in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "batch.yaml" in (out / "kustomization.yaml").read_text()


def test_gateway_url_from_status():
    gw = {"spec": {"listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]},
          "status": {"addresses": [{"type": "IPAddress", "value": "10.1.2.3"}]}}
    assert gateway_url_from_status(gw) == "http://10.1.2.3"
    gw["spec"]["listeners"][0]["port"] = 8080
    assert gateway_url_from_status(gw) == "http://10.1.2.3:8080"
    assert gateway_url_from_status({"spec": {}, "status": {}}) is None
