"""The batch service manifests (``render --batch``): the OpenAI Files + Batch API next to the stack.

    InferenceObjective  <name>-batch, priority -1: the picker sheds batch lines first
    ServiceAccount + Role + RoleBinding   `get` on the Gateway (the service reads its address)
    ConfigMap           batch.yaml (BatchSettings: port, state dir on the volume, dispatch)
    PersistentVolumeClaim  SQLite database + input/output files (ReadWriteOnce)
    Deployment          one replica, strategy Recreate (one writer of the SQLite file), our image
                        running `inferstack batch serve --gateway-from-kubernetes GATEWAY`
    Service             ClusterIP on the API port
    HTTPRoute           /v1/files and /v1/batches of the same Gateway -> the Service (longer
                        prefixes than the model route's "/", so they win; no InferencePool involved)

One pod because SQLite has one writer: to run several, replace the store with a server database
(docs/batch.md). Needs the gateway (``gateway.enabled``): lines go through it.
"""

from __future__ import annotations

from typing import Any

import yaml

from inferstack.errors import ConfigError
from inferstack.kube.serving import CONTAINER_SECURITY, POD_SECURITY
from inferstack.kube.stack import AUTH_KEYS_FILE, AUTH_SERVICE_KEY_FILE, Stack

__all__ = ["BATCH_PORT", "batch_name", "batch_objects", "batch_objective_name"]

BATCH_PORT = 8091
_CONFIG_DIR = "/etc/inferstack"
_STATE_DIR = "/var/lib/inferstack/batch"


def batch_name(stack: Stack) -> str:
    return f"{stack.name}-batch"


def batch_objective_name(stack: Stack) -> str:
    """The InferenceObjective (and x-gateway-inference-objective header value) of batch lines."""
    return f"{stack.name}-batch"


def _image(stack: Stack) -> str:
    image = stack.settings.batch.image or stack.settings.images.epp
    if not image:
        raise ConfigError("render --batch runs the inferstack image (the same one as --epp inferstack): pass "
                          "--epp-image REGISTRY/PATH:TAG or set batch.image (built from the repository's Dockerfile)")
    return image


def batch_config(stack: Stack) -> dict[str, Any]:
    b = stack.settings.batch
    config: dict[str, Any] = {
        "host": "0.0.0.0",
        "port": BATCH_PORT,
        "state_dir": _STATE_DIR,
        "max_file_bytes": int(b.max_file_gib * 1024**3),
        "dispatch": {"objective": batch_objective_name(stack), "priority": b.priority,
                     "max_concurrency": b.max_concurrency, "request_timeout_s": stack.request_timeout_s},
    }
    if b.gateway_url:
        config["gateway_url"] = b.gateway_url
    if stack.settings.gateway.auth_secret:  # private batches; lines sent with the service key
        config["auth_file"] = AUTH_KEYS_FILE
        config["gateway_key_file"] = AUTH_SERVICE_KEY_FILE
    return config


def batch_objects(stack: Stack) -> list[dict[str, Any]]:
    settings = stack.settings
    if not settings.gateway.enabled:
        raise ConfigError("render --batch needs the gateway (its lines go through it at the lowest priority); "
                          "drop --no-gateway")
    name = batch_name(stack)
    gw = settings.gateway
    b = settings.batch
    args = ["batch", "serve", "--config", f"{_CONFIG_DIR}/batch.yaml"]
    auth_volumes, auth_mounts = stack.auth_volume()
    if not b.gateway_url:
        args += ["--gateway-from-kubernetes", gw.gateway_name, "--namespace", stack.namespace]
    probe = {"httpGet": {"path": "/health", "port": BATCH_PORT}, "periodSeconds": 5, "timeoutSeconds": 2}
    claim: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": f"{b.storage_gib}Gi"}}}
    if b.storage_class:
        claim["storageClassName"] = b.storage_class
    return [
        {
            "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
            "kind": "InferenceObjective",
            "metadata": stack.meta(batch_objective_name(stack), "inference-objective"),
            "spec": {"poolRef": {"name": stack.name}, "priority": b.priority},
        },
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": stack.meta(name, "batch", app=name)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": stack.meta(name, "batch", app=name),
            "rules": [{"apiGroups": ["gateway.networking.k8s.io"], "resources": ["gateways"],
                       "resourceNames": [gw.gateway_name], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": stack.meta(name, "batch", app=name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": stack.namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": stack.meta(name, "batch", app=name),
            "data": {"batch.yaml": yaml.safe_dump(batch_config(stack), sort_keys=False, default_flow_style=False)},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": stack.meta(name, "batch", app=name),
            "spec": claim,
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": stack.meta(name, "batch", app=name),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},  # the volume is ReadWriteOnce; SQLite has one writer
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": stack.labels("batch", app=name)},
                    "spec": {
                        "serviceAccountName": name,
                        "terminationGracePeriodSeconds": 30,
                        "securityContext": {**POD_SECURITY, "runAsNonRoot": True, "runAsUser": 65532,
                                            "runAsGroup": 65532, "fsGroup": 65532},
                        "containers": [{
                            "name": "batch",
                            "image": _image(stack),
                            "args": args,
                            "ports": [{"name": "http", "containerPort": BATCH_PORT, "protocol": "TCP"}],
                            "readinessProbe": {**probe, "failureThreshold": 3},
                            "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                          "limits": {"memory": "1Gi"}},
                            "volumeMounts": [
                                {"name": "config", "mountPath": _CONFIG_DIR, "readOnly": True},
                                {"name": "data", "mountPath": _STATE_DIR},
                                {"name": "tmp", "mountPath": "/tmp"},
                                *auth_mounts,
                            ],
                            "securityContext": {**CONTAINER_SECURITY, "readOnlyRootFilesystem": True},
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": name}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": name}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},  # multipart uploads spool here
                            *auth_volumes,
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": stack.meta(name, "batch", app=name),
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": BATCH_PORT,
                                                           "targetPort": BATCH_PORT, "protocol": "TCP"}]},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": stack.meta(name, "http-route", app=name),
            "spec": {
                "parentRefs": [{"name": gw.gateway_name}],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1/files"}},
                                {"path": {"type": "PathPrefix", "value": "/v1/batches"}}],
                    "backendRefs": [{"name": name, "port": BATCH_PORT}],
                    "timeouts": {"request": f"{stack.request_timeout_s}s"},
                }],
            },
        },
    ]
