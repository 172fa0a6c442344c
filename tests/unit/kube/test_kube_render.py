"""What the rendered manifests say: one test per property the issue asks of them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferstack.errors import ConfigError
from inferstack.kube import RenderSettings, render, write
from inferstack.kube.gateway import epp_config, upstream_epp_config
from inferstack.kube.upstream_epp import OMITTED_UPSTREAM, check_picker_config

BUCKET = "my-models"


def settings_of(**kw: Any) -> RenderSettings:
    """Render settings with the user's bucket (there is no default bucket)."""
    return RenderSettings(**{"model_bucket": BUCKET, **kw})


def objects_of(**kw: Any) -> list[dict[str, Any]]:
    return render(settings_of(**kw)).objects()


def one(objs: list[dict[str, Any]], kind: str, name_part: str = "") -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and name_part in o["metadata"]["name"]]
    assert len(found) == 1, (kind, name_part, [o["metadata"]["name"] for o in found])
    return found[0]


def vllm(objs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] in ("Deployment", "LeaderWorkerSet")
             and o["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm"]
    assert len(found) == 1
    return found[0]


def pod_specs(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = []
    for o in objs:
        if o["kind"] in ("Deployment", "Job"):
            specs.append(o["spec"]["template"]["spec"])
        elif o["kind"] == "LeaderWorkerSet":
            t = o["spec"]["leaderWorkerTemplate"]
            specs += [t["leaderTemplate"]["spec"], t["workerTemplate"]["spec"]]
    return specs


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl not found: install Debian kubernetes-client (apt-get install kubernetes-client)")
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


LLAMA = {"model": "llama-3.3-70b-instruct", "accelerator": "h100"}


def test_vllm_deployment_has_everything_the_reference_architecture_uses() -> None:
    objs = objects_of(**LLAMA)
    rendered = render(settings_of(**LLAMA))
    stack = rendered.stack
    dep = vllm(objs)
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    assert [c["name"] for c in spec["containers"]] == ["inference-server"]
    server = spec["containers"][0]
    args = server["args"]
    assert "--model=/gcs/meta-llama/llama-3.3-70b-instruct" in args
    assert "--served-model-name=llama-3.3-70b-instruct" in args
    assert "--tensor-parallel-size=4" in args and "--max-model-len=131072" in args
    assert server["image"] == "docker.io/vllm/vllm-openai:v0.11.2"
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"
    assert server["startupProbe"]["httpGet"]["path"] == "/health"
    startup = server["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= stack.startup_budget_s
    assert server["lifecycle"]["preStop"]["sleep"]["seconds"] == stack.prestop_s
    assert spec["terminationGracePeriodSeconds"] == stack.grace_s == stack.prestop_s + 30
    # max generation: 4096 tokens at the 20 tok/s floor = 205 s; + 15 s deregistration.
    assert stack.max_generation_s == 205 and stack.prestop_s == 220
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert spec["nodeSelector"] == {"cloud.google.com/compute-class": "inferstack-gpu-h100-80gb-high-x4"}
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert "/dev/shm" in mounts and mounts["/gcs/meta-llama/llama-3.3-70b-instruct"]["readOnly"]
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    fuse = vols["model"]["csi"]
    assert fuse["driver"] == "gcsfuse.csi.storage.gke.io" and fuse["readOnly"]
    options = fuse["volumeAttributes"]["mountOptions"].split(",")
    assert "file-cache:enable-parallel-downloads:true" in options
    assert "file-cache:max-size-mb:-1" in options
    assert "only-dir:meta-llama/llama-3.3-70b-instruct" in options
    assert fuse["volumeAttributes"]["bucketName"] == BUCKET
    assert pod["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"
    assert [c["name"] for c in spec["initContainers"]] == ["wait-for-model", "prefetch-weights"]


def test_speculative_config_goes_to_the_vllm_container_not_a_sidecar() -> None:
    objs = objects_of(**LLAMA, spec="eagle3")
    spec = vllm(objs)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["inference-server"]
    args = spec["containers"][0]["args"]
    i = args.index("--speculative-config")
    cfg = json.loads(args[i + 1])
    assert cfg == {"method": "eagle3", "num_speculative_tokens": 3,
                   "model": "/gcs/yuhuili/eagle3-llama3.3-instruct-70b"}
    jobs = [o for o in objs if o["kind"] == "Job" and "-dl-" in o["metadata"]["name"]]
    repos = sorted(e["value"] for j in jobs for e in j["spec"]["template"]["spec"]["containers"][0]["env"]
                   if e["name"] == "REPO_ID")
    assert repos == ["meta-llama/Llama-3.3-70B-Instruct", "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B"]
    mounts = [m["mountPath"] for m in spec["containers"][0]["volumeMounts"]]
    assert "/gcs/yuhuili/eagle3-llama3.3-instruct-70b" in mounts


def test_ngram_uses_the_shared_speculative_builder() -> None:
    from inferstack.engine.speculative import SpeculativeSettings

    objs = objects_of(model="qwen3-32b", accelerator="h100", spec="ngram")
    args = vllm(objs)["spec"]["template"]["spec"]["containers"][0]["args"]
    expected = SpeculativeSettings(method="ngram", num_speculative_tokens=5, prompt_lookup_min=2,
                                   prompt_lookup_max=4).to_vllm_args()
    assert args[-2:] == expected
    assert not [o for o in objs if o["kind"] == "Job" and o["metadata"]["name"].endswith("-dl-draft")]


def test_tpu_renders_the_tpu_image_resources_and_topology() -> None:
    objs = objects_of(model="qwen3-32b", accelerator="v6e")
    spec = vllm(objs)["spec"]["template"]["spec"]
    server = spec["containers"][0]
    assert server["image"] == "docker.io/vllm/vllm-tpu:v0.11.1"
    assert server["resources"]["limits"] == {"memory": server["resources"]["limits"]["memory"], "google.com/tpu": "4"}
    assert spec["nodeSelector"] == {
        "cloud.google.com/compute-class": "inferstack-tpu-v6e-2x2",
        "cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice",
        "cloud.google.com/gke-tpu-topology": "2x2",
    }
    cc = one(objs, "ComputeClass", "tpu-")
    assert cc["spec"]["priorities"][0]["tpu"] == {"type": "tpu-v6e-slice", "count": 4, "topology": "2x2"}
    with pytest.raises(ConfigError, match="multi-host TPU"):
        objects_of(model="qwen3-32b", accelerator="v6e", nodes=2)


def test_without_compute_class_nodes_are_selected_by_accelerator_label() -> None:
    objs = objects_of(**LLAMA, compute_class=False)
    assert not [o for o in objs if o["kind"] == "ComputeClass"]
    spec = vllm(objs)["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}


def test_hpa_uses_a_vllm_pods_metric_and_the_policy_behavior() -> None:
    hpa = one(objects_of(**LLAMA), "HorizontalPodAutoscaler")
    spec = hpa["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": hpa["metadata"]["name"]}
    metric = spec["metrics"][0]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "prometheus.googleapis.com|vllm:num_requests_waiting|gauge"
    # GKE's guidance: start at 3-5 waiting requests per replica.
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "5"}
    # No behavior in the policy = none in the HPA (Kubernetes' defaults, as the local algorithm).
    assert "behavior" not in spec
    kv = one(objects_of(**LLAMA, autoscaling={"metric": "kv_cache_usage"}), "HorizontalPodAutoscaler")
    kv_metric = kv["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert kv_metric == "prometheus.googleapis.com|vllm:kv_cache_usage_perc|gauge"
    assert kv["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "800m"
    behaved = one(objects_of(**LLAMA, autoscaling={"behavior": {"scale_down": {"stabilization_window_s": 600}}}),
                  "HorizontalPodAutoscaler")["spec"]["behavior"]
    assert behaved["scaleDown"] == {"stabilizationWindowSeconds": 600, "selectPolicy": "Max",
                                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}
    assert behaved["scaleUp"]["policies"] == [{"type": "Pods", "value": 4, "periodSeconds": 15},
                                              {"type": "Percent", "value": 100, "periodSeconds": 15}]
    assert not [o for o in objects_of(**LLAMA, autoscale={"enabled": False}) if o["kind"] == "HorizontalPodAutoscaler"]


def test_gateway_pieces_and_epp_contract() -> None:
    objs = objects_of(**LLAMA)
    rendered = render(settings_of(**LLAMA))
    name = rendered.stack.name
    pool = one(objs, "InferencePool")
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"] == {"app": name}
    assert pool["spec"]["endpointPickerRef"]["name"] == f"{name}-epp"
    assert pool["spec"]["endpointPickerRef"]["port"] == {"number": 9002}
    epp = one(objs, "Deployment", "-epp")["spec"]["template"]["spec"]
    container = epp["containers"][0]
    assert container["image"] == "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0"
    args = container["args"]
    assert args[args.index("--pool-name") + 1] == name and args[args.index("--pool-namespace") + 1] == "inferstack"
    assert args[args.index("--config-file") + 1] == "/config/epp-config.yaml"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": 9002, "grpc-health": 9003, "metrics": 9090}
    assert container["readinessProbe"]["grpc"] == {"port": 9003, "service": "inference-extension"}
    role = one(objs, "Role")
    assert {g for r in role["rules"] for g in r["apiGroups"]} == {
        "", "inference.networking.k8s.io", "inference.networking.x-k8s.io"}
    assert all(r["verbs"] == ["get", "list", "watch"] for r in role["rules"])
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    cm = one(objs, "ConfigMap", "-epp")
    picker = yaml.safe_load(cm["data"]["epp-config.yaml"])
    assert check_picker_config(picker) == []
    assert picker == upstream_epp_config(rendered.stack)
    objective = one(objs, "InferenceObjective")
    assert objective["spec"]["poolRef"] == {"name": name}
    route = one(objs, "HTTPRoute")
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    assert backend == {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": name}
    assert route["spec"]["rules"][0]["timeouts"]["request"] == f"{rendered.stack.request_timeout_s}s"
    assert one(objs, "Gateway")["spec"]["gatewayClassName"] == "gke-l7-rilb"  # internal unless asked
    monitors = {o["spec"]["selector"]["matchLabels"]["app"]: o for o in objs if o["kind"] == "PodMonitoring"}
    assert set(monitors) == {name, f"{name}-epp"}
    for mon in monitors.values():
        assert mon["spec"]["endpoints"][0]["port"] == "metrics" and mon["spec"]["endpoints"][0]["path"] == "/metrics"


OURS = {**LLAMA, "gateway": {"epp": "inferstack"}, "images": {"epp": "us-docker.pkg.dev/acme/r/inferstack:0.1.0"}}


def test_our_epp_contract() -> None:
    rendered = render(settings_of(**OURS))
    objs = rendered.objects()
    name = rendered.stack.name
    container = one(objs, "Deployment", "-epp")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "us-docker.pkg.dev/acme/r/inferstack:0.1.0"
    assert container["args"] == ["epp", "--config", "/etc/inferstack/epp.yaml"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 9002, "metrics": 9090}
    role = one(objs, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    config = yaml.safe_load(one(objs, "ConfigMap", "-epp")["data"]["epp.yaml"])
    assert config == epp_config(rendered.stack)
    assert config["discovery"] == {"kind": "kubernetes", "namespace": "inferstack",
                                   "label_selector": {"app": name}, "target_port": 8000}
    assert config["objectives"] == [{"model": "llama-3.3-70b-instruct", "priority": 0}]
    assert one(objs, "Service", "-epp")["spec"]["ports"][0]["appProtocol"] == "http2"


def test_upstream_picker_profile_is_equivalent_to_ours() -> None:
    rendered = render(settings_of(**LLAMA))
    picker = upstream_epp_config(rendered.stack)
    ours = epp_config(rendered.stack)["scheduler"]
    names = {"queue": "queue-scorer", "kv-cache": "kv-cache-utilization-scorer", "prefix": "prefix-cache-scorer"}
    profile = picker["schedulingProfiles"][0]["plugins"]
    # every scorer of ours with an upstream counterpart, in order and weight; the rest left out
    assert [(p["pluginRef"], p.get("weight")) for p in profile] == [
        *((names[s["type"]], s["weight"]) for s in ours["scorers"] if s["type"] not in OMITTED_UPSTREAM),
        ("max-score-picker", None)]
    assert {s["type"] for s in ours["scorers"]} - set(names) <= set(OMITTED_UPSTREAM)
    assert ours["picker"] == "max-score"
    detector = next(p for p in picker["plugins"] if p["type"] == "utilization-detector")
    assert detector["parameters"] == {"queueDepthThreshold": 5, "kvCacheUtilThreshold": 0.8,
                                      "metricsStalenessThreshold": "200ms"}


def test_epp_config_is_accepted_by_the_gateway_settings() -> None:
    from inferstack.gateway.settings import EppSettings

    settings = EppSettings.model_validate(epp_config(render(settings_of(**OURS)).stack))
    assert settings.grpc_port == 9002 and settings.metrics_port == 9090
    assert settings.grpc_host == "0.0.0.0"


def test_gke_policies_target_the_pool() -> None:
    rendered = render(settings_of(**LLAMA))
    objs = rendered.objects()
    ref = {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": rendered.stack.name}
    backend = one(objs, "GCPBackendPolicy")
    assert backend["spec"]["targetRef"] == ref
    assert backend["spec"]["default"]["timeoutSec"] == rendered.stack.request_timeout_s == 265
    health = one(objs, "HealthCheckPolicy")
    assert health["spec"]["targetRef"] == ref
    assert health["spec"]["default"]["config"]["httpHealthCheck"] == {"requestPath": "/health", "port": 8000}
    longer = one(objects_of(**LLAMA, gateway={"backend_timeout_s": 3600}), "GCPBackendPolicy")
    assert longer["spec"]["default"]["timeoutSec"] == 3600
    external = one(objects_of(**LLAMA, gateway={"gateway_class": "gke-l7-regional-external-managed",
                                                 "external_without_keys": True}), "Gateway")
    assert external["spec"]["gatewayClassName"] == "gke-l7-regional-external-managed"


@pytest.mark.parametrize("gateway_class", ["gke-l7-regional-external-managed", "gke-l7-global-external-managed"])
def test_an_internet_facing_gateway_needs_keys_or_a_stated_guard(gateway_class: str) -> None:
    with pytest.raises(ValueError, match="internet-facing.*auth_secret.*external_without_keys"):
        settings_of(**LLAMA, gateway={"gateway_class": gateway_class})
    with pytest.raises(ValueError, match="needs epp: inferstack"):
        settings_of(**LLAMA, gateway={"gateway_class": gateway_class, "auth_secret": "api-keys"})
    keyed = settings_of(**{**OURS, "gateway": {"epp": "inferstack", "gateway_class": gateway_class,
                                              "auth_secret": "api-keys"}})
    assert keyed.gateway.auth_secret == "api-keys"
    assert settings_of(**LLAMA, gateway={"gateway_class": gateway_class, "enabled": False}).gateway.enabled is False


def test_keys_from_a_secret_reach_our_picker_and_the_batch_service(tmp_path: Path) -> None:
    rendered = render(settings_of(**{**OURS, "gateway": {"epp": "inferstack", "auth_secret": "api-keys"},
                                     "batch": {"enabled": True}}))
    objs = rendered.objects()
    name = rendered.stack.name
    epp_pod = one(objs, "Deployment", "-epp")["spec"]["template"]["spec"]
    batch_pod = one(objs, "Deployment", "-batch")["spec"]["template"]["spec"]
    for pod in (epp_pod, batch_pod):
        assert {"name": "auth", "secret": {"secretName": "api-keys", "defaultMode": 0o440}} in pod["volumes"]
        assert {"name": "auth", "mountPath": "/etc/inferstack-auth", "readOnly": True} in \
            pod["containers"][0]["volumeMounts"]
    epp = yaml.safe_load(one(objs, "ConfigMap", f"{name}-epp")["data"]["epp.yaml"])
    assert epp["auth_file"] == "/etc/inferstack-auth/keys.yaml"
    assert epp["service_key_file"] == "/etc/inferstack-auth/service-key"
    batch = yaml.safe_load(one(objs, "ConfigMap", f"{name}-batch")["data"]["batch.yaml"])
    assert (batch["auth_file"], batch["gateway_key_file"]) == ("/etc/inferstack-auth/keys.yaml",
                                                               "/etc/inferstack-auth/service-key")
    write(rendered, tmp_path)
    assert "create secret generic api-keys --from-file=keys.yaml" in (tmp_path / "README.md").read_text()
    plain = render(settings_of(**OURS)).objects()  # no Secret: nothing mounted, no keys asked
    assert not any(v["name"] == "auth" for v in one(plain, "Deployment", "-epp")["spec"]["template"]["spec"]["volumes"])


def test_upstream_epp_with_replicas_uses_leader_election() -> None:
    objs = objects_of(**LLAMA, gateway={"epp_replicas": 2})
    container = one(objs, "Deployment", "-epp")["spec"]["template"]["spec"]["containers"][0]
    assert "--ha-enable-leader-election" in container["args"]
    assert container["readinessProbe"]["grpc"]["service"] == "readiness"
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    assert any(r["resources"] == ["leases"] for r in one(objs, "Role")["rules"])


def test_our_picker_runs_two_replicas_active_active_unless_told_or_counting_quotas() -> None:
    assert one(objects_of(**OURS), "Deployment", "-epp")["spec"]["replicas"] == 2
    assert one(objects_of(**LLAMA), "Deployment", "-epp")["spec"]["replicas"] == 1  # upstream: one active
    with_keys = {**OURS, "gateway": {"epp": "inferstack", "auth_secret": "api-keys"}}
    assert one(objects_of(**with_keys), "Deployment", "-epp")["spec"]["replicas"] == 1
    told = {**OURS, "gateway": {"epp": "inferstack", "epp_replicas": 3}}
    assert one(objects_of(**told), "Deployment", "-epp")["spec"]["replicas"] == 3


def test_no_gateway_renders_none_of_it() -> None:
    kinds = {o["kind"] for o in objects_of(**LLAMA, gateway={"enabled": False})}
    assert not kinds & {"InferencePool", "InferenceObjective", "Gateway", "HTTPRoute", "Role", "RoleBinding"}


def test_security_defaults_everywhere() -> None:
    for kw in (LLAMA, {**LLAMA, "spec": "eagle3", "nodes": 2}, {"model": "qwen3-32b", "accelerator": "v5e"}):
        rendered = render(settings_of(**kw))
        objs = rendered.objects()
        for spec in pod_specs(objs):
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in containers(spec):
                sc = c.get("securityContext", {})
                assert not sc.get("privileged", False), c["name"]
                assert sc.get("allowPrivilegeEscalation") is False, c["name"]
                for env in c.get("env", []):
                    assert "valueFrom" not in env or "secretKeyRef" not in env["valueFrom"]
                    assert not str(env.get("value", "")).startswith("hf_"), env
        # The token is only ever a mounted Secret file, and only in the download Jobs.
        secret_users = [o["metadata"]["name"] for o in objs if o["kind"] in ("Job", "Deployment", "LeaderWorkerSet")
                        and "secretName" in json.dumps(o)]
        assert secret_users and all(n.endswith(("-dl-model", "-dl-draft")) for n in secret_users)


def test_leaderworkerset_for_multi_node() -> None:
    objs = objects_of(**LLAMA, spec="eagle3", nodes=2)
    assert not [o for o in objs if o["kind"] == "Deployment" and "-epp" not in o["metadata"]["name"]]
    lws = one(objs, "LeaderWorkerSet")
    tmpl = lws["spec"]["leaderWorkerTemplate"]
    assert tmpl["size"] == 2
    leader = tmpl["leaderTemplate"]["spec"]["containers"][0]
    worker = tmpl["workerTemplate"]["spec"]["containers"][0]
    assert "--tensor-parallel-size=8" in leader["args"] and "--pipeline-parallel-size=2" in leader["args"]
    assert "--distributed-executor-backend=ray" in leader["args"]
    assert "--speculative-config" in leader["args"]
    assert "ray start --head" in leader["command"][2] and "LWS_LEADER_ADDRESS" in worker["command"][2]
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == worker["resources"]["limits"]["nvidia.com/gpu"] == "8"
    # Only leaders serve HTTP: the pool, Service and monitoring select them alone.
    assert tmpl["leaderTemplate"]["metadata"]["labels"]["app"] == lws["metadata"]["name"]
    assert tmpl["workerTemplate"]["metadata"]["labels"]["app"] == lws["metadata"]["name"] + "-worker"
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"


def test_benchmark_job_waits_for_the_server_and_uses_a_linear_sweep() -> None:
    rendered = render(settings_of(**LLAMA))
    cm, job = rendered.benchmark
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config["load"]["sweep"]["type"] == "linear"
    assert config["server"]["model_name"] == "llama-3.3-70b-instruct"
    assert config["server"]["base_url"].endswith(".inferstack.svc.cluster.local:8000")
    assert config["data"]["input_distribution"]["max"] + config["data"]["output_distribution"]["max"] <= 131072
    spec = job["spec"]["template"]["spec"]
    wait = spec["initContainers"][0]
    assert wait["name"] == "wait-for-server" and "/health" in wait["command"][2]
    assert spec["containers"][0]["args"] == ["--config_file", "/etc/inference-perf/config.yaml"]


def test_names_are_checked_and_long_ones_refused() -> None:
    with pytest.raises(ConfigError, match="must be <= 54"):
        objects_of(**LLAMA, name="x" * 60)
    with pytest.raises(ConfigError, match="not a DNS-1123 label"):
        objects_of(**LLAMA, namespace="Bad_NS")
    longest = render(settings_of(model="llama-4-scout-17b-16e-instruct", accelerator="rtx-pro-6000", spec="eagle"))
    assert all(len(o["metadata"]["name"]) <= 63 for o in longest.objects())


def test_public_surfaces_are_declared() -> None:
    import importlib

    for name in ("inferstack.kube", "inferstack.commands.kube", "inferstack.kube.gateway", "inferstack.kube.jobs",
                 "inferstack.kube.lora", "inferstack.kube.render", "inferstack.kube.serving", "inferstack.kube.settings",
                 "inferstack.kube.stack", "inferstack.kube.upstream_epp", "inferstack.kube.validate"):
        module = importlib.import_module(name)
        for public in module.__all__:
            assert hasattr(module, public), (name, public)


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(render(settings_of(**LLAMA, spec="eagle3")), a)
    write(render(settings_of(**LLAMA, spec="eagle3")), b)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.mark.parametrize("single_file", [False, True])
def test_kubectl_kustomize_builds_the_directories(tmp_path: Path, single_file: bool) -> None:
    rendered = render(settings_of(**LLAMA, spec="eagle3"))
    write(rendered, tmp_path, single_file=single_file)
    built = kustomize(tmp_path)
    stack = [o for objs in rendered.files.values() for o in objs]
    ids = lambda objs: sorted((o["kind"], o["metadata"]["name"]) for o in objs)  # noqa: E731
    assert ids(built) == ids(stack)
    by_id = {(o["kind"], o["metadata"]["name"]): o for o in built}
    for obj in stack:  # kustomize passes our objects through unchanged
        assert by_id[(obj["kind"], obj["metadata"]["name"])] == obj
    assert ids(kustomize(tmp_path / "benchmark")) == ids(rendered.benchmark)
    assert (tmp_path / "manifests.yaml").exists() == single_file


def test_switching_to_single_file_removes_the_stale_files(tmp_path: Path) -> None:
    write(render(settings_of(**LLAMA)), tmp_path)
    assert (tmp_path / "serving.yaml").exists()
    write(render(settings_of(**LLAMA)), tmp_path, single_file=True)
    assert not (tmp_path / "serving.yaml").exists() and (tmp_path / "manifests.yaml").exists()


def test_readme_explains_the_sizing_and_the_order(tmp_path: Path) -> None:
    write(render(settings_of(**LLAMA)), tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "tensor-parallel-size: 4" in readme and "kubectl apply -k ." in readme
    assert "create secret generic hf-token" in readme
