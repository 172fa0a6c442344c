"""The serving manifests: Namespace, ComputeClass, ServiceAccount, vLLM (Deployment, or a
LeaderWorkerSet across nodes), its Service, PodMonitoring and HorizontalPodAutoscaler.

Invariants: the vLLM container gets the speculative config as arguments (never a sidecar);
model weights come read-only from a GCS FUSE volume and the pod waits (init container) for the
download Job's completion marker; nothing runs privileged; every pod uses seccomp RuntimeDefault;
no secret is read by these pods at all (they never talk to Hugging Face: HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import math
from typing import Any

from inferstack.kube.stack import DONE_MARKER, VLLM_PORT, Stack, gib

__all__ = [
    "POD_SECURITY",
    "CONTAINER_SECURITY",
    "compute_class",
    "gcs_volume",
    "hpa",
    "namespace",
    "node_selector",
    "pod_monitoring",
    "service_account",
    "vllm_service",
    "vllm_workload",
]

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
    """The custom ComputeClass for the chosen machine shape (the reference architecture's names)."""
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
        "metadata": stack.meta(shape.compute_class, "compute-class", namespaced=False, shared=True),
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


def node_selector(stack: Stack) -> dict[str, str]:
    acc = stack.accelerator
    selector: dict[str, str] = {}
    if stack.settings.compute_class:
        selector["cloud.google.com/compute-class"] = stack.plan.shape.compute_class
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
            "volumeAttributes": {"bucketName": stack.settings.model_bucket, "mountOptions": options},
        },
    }


def _resources(stack: Stack) -> tuple[dict[str, Any], bool]:
    """Requests/limits per vLLM pod, and whether the GCS FUSE file cache may live in memory."""
    plan, acc, shape = stack.plan, stack.accelerator, stack.plan.shape
    share = plan.devices_per_node / shape.accelerators
    node_gib = shape.memory_gb * 1e9 / 2**30
    cap = math.floor(0.85 * node_gib * share)
    weights = gib(stack.model.weight_bytes) / plan.nodes + (gib(plan.chosen.draft) * plan.tensor_parallel_size)
    shm = _shm_gib(stack)
    base = 4 + 2 * plan.devices_per_node + shm
    cache_in_memory = math.ceil(weights + base) <= cap
    memory = min(cap, math.ceil(weights + base)) if cache_in_memory else min(cap, base + 8)
    cpu = max(2, min(math.floor(0.8 * shape.vcpus * share), 16 * plan.devices_per_node))
    devices = str(plan.devices_per_node)
    resources = {
        "requests": {"cpu": str(cpu), "memory": f"{memory}Gi", acc.resource_name: devices},
        "limits": {"memory": f"{memory}Gi", acc.resource_name: devices},
    }
    return resources, cache_in_memory


def _shm_gib(stack: Stack) -> int:
    return 16 if stack.plan.devices > 1 else 2


def _vllm_args(stack: Stack) -> list[str]:
    args = [
        f"--model={stack.model_dir}",
        f"--served-model-name={stack.served_name}",
        f"--port={VLLM_PORT}",
        *stack.plan.vllm_args(),
        "--no-enable-log-requests",
    ]
    if stack.multi_node:
        args.append("--distributed-executor-backend=ray")
    args.extend(stack.speculative.to_vllm_args())
    return args


def _volumes(stack: Stack, cache_in_memory: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{_shm_gib(stack)}Gi"}},
        gcs_volume(stack, "model", stack.model.gcs_path),
    ]
    mounts = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model", "mountPath": stack.model_dir, "readOnly": True},
    ]
    if stack.draft:
        volumes.append(gcs_volume(stack, "draft", stack.draft.hf_id.lower()))
        mounts.append({"name": "draft", "mountPath": str(stack.draft_dir), "readOnly": True})
    if cache_in_memory:
        # The GCS FUSE sidecar uses a volume named gke-gcsfuse-cache as its file cache.
        volumes.append({"name": "gke-gcsfuse-cache", "emptyDir": {"medium": "Memory"}})
    return volumes, mounts


def _wait_for_models(stack: Stack, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    dirs = [stack.model_dir] + ([str(stack.draft_dir)] if stack.draft_dir else [])
    checks = " && ".join(f"[ -f {d}/{DONE_MARKER} ]" for d in dirs)
    script = (
        f"until {checks}; do echo 'waiting for the model download Job to finish'; sleep 10; done"
    )
    return {
        "name": "wait-for-model",
        "image": stack.settings.images.wait,
        "command": ["/bin/sh", "-c", script],
        "volumeMounts": [m for m in mounts if m["name"] in ("model", "draft")],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": CONTAINER_SECURITY,
    }


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
    init = [_wait_for_models(stack, mounts)]
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
                "replicas": stack.settings.autoscale.min_replicas,
                "selector": {"matchLabels": {"app": stack.name}},
                # No surge: a second copy would need a second set of accelerators.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
                "template": {"metadata": template_meta, "spec": _pod_spec(stack, [server], volumes, init)},
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
            "replicas": stack.settings.autoscale.min_replicas,
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "leaderWorkerTemplate": {
                "size": stack.plan.nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {"metadata": template_meta, "spec": _pod_spec(stack, [leader], volumes, init)},
                "workerTemplate": {"metadata": worker_meta, "spec": _pod_spec(stack, [worker], volumes, init)},
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


_HPA_METRICS = {
    "num_requests_waiting": ("prometheus.googleapis.com|vllm:num_requests_waiting|gauge", 10.0),
    "kv_cache_usage": ("prometheus.googleapis.com|vllm:kv_cache_usage_perc|gauge", 0.8),
}


def _quantity(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def hpa(stack: Stack) -> dict[str, Any]:
    """HPA on a per-pod vLLM gauge from Google Managed Prometheus (custom metrics adapter)."""
    auto = stack.settings.autoscale
    metric, default_target = _HPA_METRICS[auto.metric]
    target = auto.target if auto.target is not None else default_target
    kind = "LeaderWorkerSet" if stack.multi_node else "Deployment"
    api = "leaderworkerset.x-k8s.io/v1" if stack.multi_node else "apps/v1"
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": stack.meta(stack.name, "autoscaler"),
        "spec": {
            "scaleTargetRef": {"apiVersion": api, "kind": kind, "name": stack.name},
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": [{
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric},
                    "target": {"type": "AverageValue", "averageValue": _quantity(target)},
                },
            }],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": auto.scale_up_stabilization_s,
                    "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": auto.scale_up_pods_per_minute, "periodSeconds": 60}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": auto.scale_down_stabilization_s,
                    "selectPolicy": "Min",
                    "policies": [{"type": "Pods", "value": auto.scale_down_pods_per_period,
                                  "periodSeconds": auto.scale_down_period_s}],
                },
            },
        },
    }

