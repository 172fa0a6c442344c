"""The serving manifests: Namespace, ComputeClasses, ServiceAccount, vLLM (Deployment, or a
LeaderWorkerSet across nodes), its Service and PodMonitoring (autoscaling: ``kube.autoscaling``).

Invariants: the vLLM container gets the speculative config as arguments (never a sidecar);
model weights come read-only from the user's bucket through a GCS FUSE volume, and the pod waits
(init container) until each model folder is complete: our download Job's marker, or config.json
plus every weight file its index names (a folder the reference's download Job filled); the
optional prefetch sidecar only reads; nothing runs privileged; every pod uses seccomp
RuntimeDefault; no secret is read by these pods (they never talk to Hugging Face: HF_HUB_OFFLINE=1).
With LoRA (``lora.enabled``) the adapters come the same way, read-only from the bucket's adapters
folder, and the lora-syncer sidecar loads the ConfigMap's set through vLLM's runtime API; vLLM
gets no ``--lora-modules``, so the ConfigMap is the one list of adapters a pod holds.
"""

from __future__ import annotations

import json
import math
from typing import Any

from inferstack.kube.stack import ADAPTERS_DIR, DONE_MARKER, VLLM_PORT, Stack, gib

__all__ = [
    "POD_SECURITY",
    "CONTAINER_SECURITY",
    "SYNCER_CONFIG_DIR",
    "SYNCER_CONFIG_FILE",
    "SYNCER_METRICS_PORT",
    "compute_class",
    "download_compute_class",
    "folder_complete_check",
    "gcs_volume",
    "namespace",
    "node_selector",
    "pod_monitoring",
    "service_account",
    "vllm_service",
    "vllm_workload",
]

# The lora-syncer reads DYNAMIC_LORA_ROLLOUT_CONFIG, a file of the ConfigMap mounted as a folder
# (a subPath mount would never see edits), and serves Prometheus metrics on 8080.
SYNCER_CONFIG_DIR = "/config"
SYNCER_CONFIG_FILE = "configmap.yaml"
SYNCER_METRICS_PORT = 8080

POD_SECURITY: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}

# GCS FUSE: cache metadata forever (weights never change under a path), never cache misses (the
# init container polls for the completion marker), read files in parallel into the file cache.
_MOUNT_OPTIONS = (
    "implicit-dirs",
    "metadata-cache:ttl-secs:-1",
    "metadata-cache:stat-cache-max-size-mb:-1",
    "metadata-cache:type-cache-max-size-mb:-1",
    "metadata-cache:negative-ttl-secs:0",
    "file-cache:max-size-mb:-1",
    "file-cache:cache-file-for-range-read:true",
    "file-cache:enable-parallel-downloads:true",
    "file-system:kernel-list-cache-ttl-secs:-1",
)


def namespace(stack: Stack) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": stack.meta(stack.namespace, "namespace", namespaced=False, shared=True)}


def service_account(stack: Stack) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": stack.meta(stack.settings.service_account, "service-account", shared=True),
        "automountServiceAccountToken": False,
    }


def compute_class(stack: Stack) -> dict[str, Any]:
    """The custom ComputeClass for the chosen machine shape, under our own name (inferstack-<the
    reference architecture's name>): same shape, but not the same object as the reference's."""
    shape = stack.plan.shape
    acc = stack.accelerator
    if acc.kind == "tpu":
        device: dict[str, Any] = {
            "tpu": {"type": acc.node_label_value, "count": shape.accelerators, "topology": shape.tpu_topology}
        }
    else:
        device = {"gpu": {"type": acc.node_label_value, "count": shape.accelerators, "driverVersion": "latest"}}
    base = {**device, "machineType": shape.machine_type}
    return {
        "apiVersion": "cloud.google.com/v1",
        "kind": "ComputeClass",
        "metadata": stack.meta(stack.compute_class_name, "compute-class", namespaced=False, shared=True),
        "spec": {
            "activeMigration": {"optimizeRulePriority": True},
            "nodePoolAutoCreation": {"enabled": True},
            "priorities": [
                {**base, "reservations": {"affinity": "AnyBestEffort"}, "spot": False},
                {**base, "spot": False},
                {**base, "spot": True},
            ],
            "whenUnsatisfiable": "DoNotScaleUp",
        },
    }


# Scratch space for the largest catalog checkpoint (Llama 4 Scout, ~218 GB) with headroom; one
# class serves every stack, so its size does not depend on the model rendered.
_DOWNLOAD_BOOT_DISK_GB = 500


def download_compute_class(stack: Stack) -> dict[str, Any]:
    """Nodes for the download Jobs: a local SSD (375 GiB of ephemeral storage) like the reference's
    ``model-download`` class, else a large boot disk."""
    return {
        "apiVersion": "cloud.google.com/v1",
        "kind": "ComputeClass",
        "metadata": stack.meta(stack.download_compute_class, "compute-class", namespaced=False, shared=True),
        "spec": {
            "activeMigration": {"optimizeRulePriority": True},
            "nodePoolAutoCreation": {"enabled": True},
            "priorities": [
                {"machineType": "c4-standard-4-lssd", "spot": False, "storage": {"localSSDCount": 1}},
                {"machineType": "c3-standard-4-lssd", "spot": False, "storage": {"localSSDCount": 1}},
                {"machineFamily": "n4", "minCores": 4, "spot": False,
                 "storage": {"bootDiskType": "hyperdisk-balanced", "bootDiskSize": _DOWNLOAD_BOOT_DISK_GB}},
            ],
            "whenUnsatisfiable": "ScaleUpAnyway",
        },
    }


def node_selector(stack: Stack) -> dict[str, str]:
    acc = stack.accelerator
    selector: dict[str, str] = {}
    if stack.settings.compute_class:
        selector["cloud.google.com/compute-class"] = stack.compute_class_name
    if acc.kind == "tpu":
        selector[acc.node_label] = acc.node_label_value
        selector["cloud.google.com/gke-tpu-topology"] = str(stack.plan.shape.tpu_topology)
    elif not stack.settings.compute_class:
        selector[acc.node_label] = acc.node_label_value
    return selector


def gcs_volume(stack: Stack, name: str, folder: str, *, read_only: bool = True) -> dict[str, Any]:
    options = ",".join((*_MOUNT_OPTIONS, f"only-dir:{folder}"))
    return {
        "name": name,
        "csi": {
            "driver": "gcsfuse.csi.storage.gke.io",
            "readOnly": read_only,
            "volumeAttributes": {"bucketName": stack.bucket, "mountOptions": options},
        },
    }


def _resources(stack: Stack) -> tuple[dict[str, Any], bool]:
    """Requests/limits per vLLM pod, and whether the GCS FUSE file cache may live in memory."""
    plan, shape = stack.plan, stack.plan.shape
    share = plan.devices_per_node / shape.accelerators
    node_gib = shape.memory_gb * 1e9 / 2**30
    cap = math.floor(0.85 * node_gib * share)
    weights = gib(stack.model.weight_bytes) / plan.nodes + (gib(plan.chosen.draft) * plan.tensor_parallel_size)
    shm = _shm_gib(stack)
    base = 4 + 2 * plan.devices_per_node + shm
    if stack.cold_start == "runai-streamer":
        # The streamer reads gs:// itself into a bounded CPU buffer; no file cache to hold.
        memory = min(cap, base + 8 + stack.settings.cold_start.streamer_memory_limit_gib)
        cache_in_memory = False
        return _resource_dict(stack, _cpu_of(stack, share), memory), cache_in_memory
    cache_in_memory = math.ceil(weights + base) <= cap
    memory = min(cap, math.ceil(weights + base)) if cache_in_memory else min(cap, base + 8)
    return _resource_dict(stack, _cpu_of(stack, share), memory), cache_in_memory


def _cpu_of(stack: Stack, share: float) -> int:
    plan = stack.plan
    return max(2, min(math.floor(0.8 * plan.shape.vcpus * share), 16 * plan.devices_per_node))


def _resource_dict(stack: Stack, cpu: int, memory: int) -> dict[str, Any]:
    devices = str(stack.plan.devices_per_node)
    name = stack.accelerator.resource_name
    return {
        "requests": {"cpu": str(cpu), "memory": f"{memory}Gi", name: devices},
        "limits": {"memory": f"{memory}Gi", name: devices},
    }


def _shm_gib(stack: Stack) -> int:
    return 16 if stack.plan.devices > 1 else 2


def _vllm_args(stack: Stack) -> list[str]:
    streamer = stack.cold_start == "runai-streamer"
    args = [
        f"--model={stack.gcs_model_uri if streamer else stack.model_dir}",
        f"--served-model-name={stack.served_name}",
        f"--port={VLLM_PORT}",
        *stack.plan.vllm_args(),
        "--no-enable-log-requests",
    ]
    if streamer:
        opts = stack.settings.cold_start
        extra = {"concurrency": opts.streamer_concurrency,
                 "memory_limit": opts.streamer_memory_limit_gib * 2**30}
        args += ["--load-format=runai_streamer",
                 f"--model-loader-extra-config={json.dumps(extra, separators=(',', ':'))}"]
    if stack.multi_node:
        args.append("--distributed-executor-backend=ray")
    args.extend(stack.speculative.to_vllm_args())
    # --enable-lora --max-loras=N --max-lora-rank=R [--max-cpu-loras=M]: the local engine's flags,
    # written like the others here.
    args.extend(_joined(stack.settings.lora.engine_settings().to_vllm_args(stack.served_name)))
    return args


def _joined(argv: list[str]) -> list[str]:
    """``["--flag", "value", "--switch"]`` -> ``["--flag=value", "--switch"]``."""
    out: list[str] = []
    for arg in argv:
        if out and not arg.startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def _volumes(stack: Stack, cache_in_memory: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{_shm_gib(stack)}Gi"}},
        gcs_volume(stack, "model", stack.model.gcs_path),
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model", "mountPath": stack.model_dir, "readOnly": True},
    ]
    if stack.draft:
        volumes.append(gcs_volume(stack, "draft", stack.draft.hf_id.lower()))
        mounts.append({"name": "draft", "mountPath": str(stack.draft_dir), "readOnly": True})
    if stack.lora:
        volumes.append(gcs_volume(stack, "adapters", stack.settings.lora.adapters_folder))
        mounts.append({"name": "adapters", "mountPath": ADAPTERS_DIR, "readOnly": True})
    if cache_in_memory:
        # The GCS FUSE sidecar uses a volume named gke-gcsfuse-cache as its file cache.
        volumes.append({"name": "gke-gcsfuse-cache", "emptyDir": {"medium": "Memory"}})
    return volumes, mounts


# POSIX sh (busybox): is folder $1 complete? Our marker, or config.json plus every weight file the
# safetensors / PyTorch index names (GCS objects appear only once fully uploaded), or a single-file
# checkpoint. Folders filled by the reference architecture's download Job have no marker.
_COMPLETE_FN = (
    "complete() {\n"
    f"  [ -f \"$1/{DONE_MARKER}\" ] && return 0\n"
    "  [ -f \"$1/config.json\" ] || return 1\n"
    "  for index in \"$1/model.safetensors.index.json\" \"$1/pytorch_model.bin.index.json\"; do\n"
    "    [ -f \"$index\" ] || continue\n"
    "    for f in $(grep -oE '\"[^\"]+\\.(safetensors|bin)\"' \"$index\" | tr -d '\"' | sort -u); do\n"
    "      [ -f \"$1/$f\" ] || return 1\n"
    "    done\n"
    "    return 0\n"
    "  done\n"
    "  [ -f \"$1/model.safetensors\" ] || [ -f \"$1/pytorch_model.bin\" ]\n"
    "}\n"
)


def folder_complete_check(dirs: list[str]) -> str:
    """A shell script that waits until every folder in ``dirs`` holds a complete model."""
    checks = " && ".join(f"complete {d}" for d in dirs)
    return (
        _COMPLETE_FN
        + f"until {checks}; do\n"
        "  echo 'waiting for complete weights (a download Job running?)'; sleep 10\n"
        "done\n"
        "echo 'weights complete'\n"
    )


def _wait_for_models(stack: Stack, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    dirs = [stack.model_dir] + ([str(stack.draft_dir)] if stack.draft_dir else [])
    return {
        "name": "wait-for-model",
        "image": stack.settings.images.wait,
        "command": ["/bin/sh", "-c", folder_complete_check(dirs)],
        "volumeMounts": [m for m in mounts if m["name"] in ("model", "draft")],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": CONTAINER_SECURITY,
    }


def _prefetch_sidecar(stack: Stack, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The reference architecture's cold-start trick as a native sidecar (restartPolicy Always):
    read every weight file once, in parallel, so GCS FUSE (parallel downloads) fills its file
    cache while vLLM starts; vLLM's own reads then hit the cache. It starts after wait-for-model
    and does not delay vLLM; it sleeps afterwards, since a sidecar that exits is restarted."""
    dirs = " ".join([stack.model_dir] + ([str(stack.draft_dir)] if stack.draft_dir else []))
    jobs = stack.settings.cold_start.prefetch_parallelism
    script = (
        'echo "prefetch: start $(date -u +%H:%M:%S)"\n'
        f"find {dirs} -type f \\( -name '*.safetensors' -o -name '*.bin' \\) "
        f"| xargs -r -P {jobs} -I{{}} dd if={{}} of=/dev/null bs=4M\n"
        'echo "prefetch: done $(date -u +%H:%M:%S)"\n'
        "exec sleep 2147483647\n"
    )
    return {
        "name": "prefetch-weights",
        "image": stack.settings.images.wait,
        "command": ["/bin/sh", "-c", script],
        "restartPolicy": "Always",
        "volumeMounts": [m for m in mounts if m["name"] in ("model", "draft")],
        "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": CONTAINER_SECURITY,
    }


def _lora_syncer(stack: Stack) -> dict[str, Any]:
    """The GIE lora-syncer as a native sidecar (restartPolicy Always): it loads and unloads adapters
    on the vLLM container next to it (localhost) until vLLM holds the ConfigMap's set, on each edit
    of the ConfigMap and every 5 s (so also after vLLM restarted and lost its runtime adapters)."""
    return {
        "name": "lora-syncer",
        "image": stack.settings.images.lora_syncer,
        "restartPolicy": "Always",
        "env": [{"name": "DYNAMIC_LORA_ROLLOUT_CONFIG", "value": f"{SYNCER_CONFIG_DIR}/{SYNCER_CONFIG_FILE}"}],
        "ports": [{"name": "syncer-metrics", "containerPort": SYNCER_METRICS_PORT, "protocol": "TCP"}],
        # Not a subPath mount: the kubelet updates a ConfigMap folder in place, never a subPath file.
        "volumeMounts": [{"name": "lora-syncer-config", "mountPath": SYNCER_CONFIG_DIR, "readOnly": True}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": CONTAINER_SECURITY,
    }


def _syncer_volume(stack: Stack) -> dict[str, Any]:
    return {"name": "lora-syncer-config", "configMap": {"name": stack.adapters_configmap}}


def _init_containers(stack: Stack, mounts: list[dict[str, Any]], *, server: bool = True) -> list[dict[str, Any]]:
    """``server``: the pod that runs vLLM's API server (not a Ray worker) also gets the syncer."""
    init = [_wait_for_models(stack, mounts)]
    if stack.cold_start == "prefetch":
        init.append(_prefetch_sidecar(stack, mounts))
    if stack.lora and server:
        init.append(_lora_syncer(stack))
    return init


def _server_container(stack: Stack, resources: dict[str, Any], mounts: list[dict[str, Any]],
                      *, command: list[str]) -> dict[str, Any]:
    period = 10
    return {
        "name": "inference-server",
        "image": stack.image,
        "command": command,
        "args": _vllm_args(stack),
        "env": [
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
            # VLLM_ALLOW_RUNTIME_LORA_UPDATING: the runtime load/unload API the syncer calls.
            *({"name": k, "value": v} for k, v in stack.settings.lora.engine_settings().vllm_env().items()),
        ],
        "ports": [{"name": "metrics", "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "startupProbe": {
            "httpGet": {"path": "/health", "port": VLLM_PORT},
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(stack.startup_budget_s / period),
        },
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": VLLM_PORT},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": stack.prestop_s}}},
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY,
    }


def _pod_annotations() -> dict[str, str]:
    # Sidecar limits 0 = unbounded: the file cache must be able to hold the whole model.
    return {
        "gke-gcsfuse/volumes": "true",
        "gke-gcsfuse/cpu-limit": "0",
        "gke-gcsfuse/memory-limit": "0",
        "gke-gcsfuse/ephemeral-storage-limit": "0",
    }


def _pod_spec(stack: Stack, containers: list[dict[str, Any]], volumes: list[dict[str, Any]],
              init: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": stack.settings.service_account,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": stack.grace_s,
        "securityContext": POD_SECURITY,
        "nodeSelector": node_selector(stack),
        "initContainers": init,
        "containers": containers,
        "volumes": volumes,
    }
    return spec


_RAY_PORT = 6379
_LEADER_SCRIPT = (
    "set -e\n"
    f"ray start --head --port={_RAY_PORT} --disable-usage-stats\n"
    "until python3 -c 'import os, ray, sys; ray.init(address=\"auto\", logging_level=\"ERROR\"); "
    "sys.exit(0 if sum(n[\"Alive\"] for n in ray.nodes()) >= int(os.environ[\"LWS_GROUP_SIZE\"]) else 1)'; "
    "do echo 'waiting for the Ray workers'; sleep 5; done\n"
    "exec python3 -m vllm.entrypoints.openai.api_server \"$@\"\n"
)
_WORKER_SCRIPT = (
    f"exec ray start --address=\"${{LWS_LEADER_ADDRESS}}:{_RAY_PORT}\" --disable-usage-stats --block"
)


def vllm_workload(stack: Stack) -> dict[str, Any]:
    """A Deployment (one node per replica) or a LeaderWorkerSet (tensor x pipeline parallel)."""
    resources, cache_in_memory = _resources(stack)
    volumes, mounts = _volumes(stack, cache_in_memory)
    init = _init_containers(stack, mounts)
    server_volumes = volumes + ([_syncer_volume(stack)] if stack.lora else [])
    template_meta = {
        "labels": {**stack.labels("vllm"), "ai.gke.io/model": stack.served_name,
                   "ai.gke.io/inference-server": "vllm"},
        "annotations": _pod_annotations(),
    }
    if not stack.multi_node:
        server = _server_container(
            stack, resources, mounts, command=["python3", "-m", "vllm.entrypoints.openai.api_server"]
        )
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": stack.meta(stack.name, "vllm"),
            "spec": {
                "replicas": stack.initial_replicas,
                "selector": {"matchLabels": {"app": stack.name}},
                # No surge: a second copy would need a second set of accelerators.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                "template": {"metadata": template_meta,
                             "spec": _pod_spec(stack, [server], server_volumes, init)},
            },
        }
    leader = _server_container(stack, resources, mounts, command=["/bin/sh", "-c", _LEADER_SCRIPT, "vllm-leader"])
    worker = {
        "name": "ray-worker",
        "image": stack.image,
        "command": ["/bin/sh", "-c", _WORKER_SCRIPT],
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": CONTAINER_SECURITY,
    }
    worker_meta = {
        "labels": {**stack.labels("vllm-worker", app=f"{stack.name}-worker"),
                   "ai.gke.io/model": stack.served_name},
        "annotations": _pod_annotations(),
    }
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": stack.meta(stack.name, "vllm"),
        "spec": {
            "replicas": stack.initial_replicas,
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "leaderWorkerTemplate": {
                "size": stack.plan.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {"metadata": template_meta,
                                   "spec": _pod_spec(stack, [leader], server_volumes, init)},
                "workerTemplate": {"metadata": worker_meta,
                                   "spec": _pod_spec(stack, [worker], volumes,
                                                     _init_containers(stack, mounts, server=False))},
            },
        },
    }


def vllm_service(stack: Stack) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": stack.meta(stack.name, "vllm"),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": stack.name},
            "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": VLLM_PORT, "protocol": "TCP"}],
        },
    }


def pod_monitoring(stack: Stack, name: str, app: str, port: str = "metrics") -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.googleapis.com/v1",
        "kind": "PodMonitoring",
        "metadata": stack.meta(name, "pod-monitoring", app=app),
        "spec": {
            "selector": {"matchLabels": {"app": app}},
            "endpoints": [{"port": port, "path": "/metrics", "interval": "15s"}],
            "targetLabels": {"metadata": ["pod", "container", "node"]},
        },
    }
