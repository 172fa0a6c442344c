"""The gateway manifests: InferencePool + our endpoint picker (EPP) + InferenceObjective +
Gateway/HTTPRoute, as GKE Inference Gateway wires them.

Invariants: the EPP runs the inferstack image with ``epp --config /etc/inferstack/epp.yaml``; its
ConfigMap holds the same epp.yaml schema the local gateway reads; its ServiceAccount may only
get/list/watch pods in the namespace (it discovers replicas by label, not through the
InferencePool); the route's request timeout covers the longest generation we drain for.
"""

from __future__ import annotations

from typing import Any

import yaml

from inferstack.kube.serving import CONTAINER_SECURITY, POD_SECURITY, pod_monitoring
from inferstack.kube.stack import EPP_GRPC_PORT, EPP_METRICS_PORT, VLLM_PORT, Stack

__all__ = ["epp_config", "gateway_objects"]

EPP_CONFIG_DIR = "/etc/inferstack"


def epp_name(stack: Stack) -> str:
    return f"{stack.name}-epp"


def epp_config(stack: Stack) -> dict[str, Any]:
    """epp.yaml: the endpoint picker's configuration (shared schema with the local gateway)."""
    return {
        "grpc_port": EPP_GRPC_PORT,
        "grpc_host": "0.0.0.0",  # reachable by the gateway, not only on the pod's loopback
        "metrics_port": EPP_METRICS_PORT,
        "discovery": {
            "kind": "kubernetes",
            "namespace": stack.namespace,
            "label_selector": {"app": stack.name},
            "target_port": VLLM_PORT,
        },
        "scrape_interval_ms": stack.settings.gateway.scrape_interval_ms,
        "scheduler": {
            "scorers": [
                {"type": "queue", "weight": 1},
                {"type": "kv-cache", "weight": 1},
                {"type": "prefix", "weight": 1},
            ],
            "picker": "max-score",
        },
        "objectives": [{"model": stack.served_name, "priority": stack.settings.gateway.priority}],
    }


def _epp_deployment(stack: Stack) -> dict[str, Any]:
    name = epp_name(stack)
    # Our EPP answers grpc.health.v1 on its ext_proc port (EppSettings.grpc_port), so the probes
    # use that port; no separate health port is declared that nothing would listen on.
    probe = {"grpc": {"port": EPP_GRPC_PORT}, "periodSeconds": 5, "timeoutSeconds": 2}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": stack.meta(name, "endpoint-picker", app=name),
        "spec": {
            "replicas": stack.settings.gateway.epp_replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": stack.labels("endpoint-picker", app=name)},
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {**POD_SECURITY, "runAsNonRoot": True, "runAsUser": 65532,
                                        "runAsGroup": 65532},
                    "containers": [{
                        "name": "epp",
                        "image": stack.settings.images.epp,
                        "args": ["epp", "--config", f"{EPP_CONFIG_DIR}/epp.yaml"],
                        "ports": [
                            {"name": "grpc", "containerPort": EPP_GRPC_PORT, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": EPP_METRICS_PORT, "protocol": "TCP"},
                        ],
                        "readinessProbe": {**probe, "failureThreshold": 3},
                        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 6},
                        "resources": {
                            "requests": {"cpu": "500m", "memory": "512Mi"},
                            "limits": {"memory": "1Gi"},
                        },
                        "volumeMounts": [
                            {"name": "config", "mountPath": EPP_CONFIG_DIR, "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp"},
                        ],
                        "securityContext": {**CONTAINER_SECURITY, "readOnlyRootFilesystem": True},
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": name}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def gateway_objects(stack: Stack) -> list[dict[str, Any]]:
    name = epp_name(stack)
    gw = stack.settings.gateway
    config_text = yaml.safe_dump(epp_config(stack), sort_keys=False, default_flow_style=False)
    return [
        {
            "apiVersion": "inference.networking.k8s.io/v1",
            "kind": "InferencePool",
            "metadata": stack.meta(stack.name, "inference-pool"),
            "spec": {
                "selector": {"matchLabels": {"app": stack.name}},
                "targetPorts": [{"number": VLLM_PORT}],
                "endpointPickerRef": {
                    "kind": "Service",
                    "name": name,
                    "port": {"number": EPP_GRPC_PORT},
                    "failureMode": "FailClose",
                },
            },
        },
        {
            "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
            "kind": "InferenceObjective",
            "metadata": stack.meta(stack.served_name, "inference-objective"),
            "spec": {"poolRef": {"name": stack.name}, "priority": gw.priority},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": stack.meta(name, "endpoint-picker", app=name),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": stack.meta(name, "endpoint-picker", app=name),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": stack.meta(name, "endpoint-picker", app=name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": stack.namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": stack.meta(name, "endpoint-picker", app=name),
            "data": {"epp.yaml": config_text},
        },
        _epp_deployment(stack),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": stack.meta(name, "endpoint-picker", app=name),
            "spec": {
                "type": "ClusterIP",
                "selector": {"app": name},
                "ports": [
                    {"name": "grpc-ext-proc", "port": EPP_GRPC_PORT, "targetPort": EPP_GRPC_PORT,
                     "protocol": "TCP", "appProtocol": "http2"},
                    {"name": "metrics", "port": EPP_METRICS_PORT, "targetPort": EPP_METRICS_PORT,
                     "protocol": "TCP"},
                ],
            },
        },
        pod_monitoring(stack, name, name),
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": stack.meta(gw.gateway_name, "gateway", shared=True),
            "spec": {
                "gatewayClassName": gw.gateway_class,
                "listeners": [{
                    "name": "http",
                    "protocol": "HTTP",
                    "port": gw.listener_port,
                    "allowedRoutes": {"namespaces": {"from": "Same"}},
                }],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": stack.meta(stack.name, "http-route"),
            "spec": {
                "parentRefs": [{"name": gw.gateway_name}],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [{
                        "group": "inference.networking.k8s.io",
                        "kind": "InferencePool",
                        "name": stack.name,
                    }],
                    "timeouts": {"request": f"{stack.request_timeout_s}s"},
                }],
            },
        },
    ]
