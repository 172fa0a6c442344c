"""The gateway manifests: InferencePool + an endpoint picker (EPP) + InferenceObjective + GKE
policies (HealthCheckPolicy, GCPBackendPolicy) + Gateway/HTTPRoute, as GKE Inference Gateway wires them.

Two pickers can sit behind the pool (``gateway.epp``):

- ``upstream`` (default): the Gateway API Inference Extension EPP image, configured like its
  Helm chart with ``provider.name=gke`` (args, ports 9002/9003/9090, RBAC on pods, InferencePools
  and InferenceObjectives) and an EndpointPickerConfig equivalent to our scheduler, checked offline
  by ``upstream_epp.check_picker_config`` before it is rendered.
- ``inferstack``: our EPP (``images.epp``, built from the repository's Dockerfile) with
  ``epp --config /etc/inferstack/epp.yaml``; its ConfigMap holds the same epp.yaml schema the
  local gateway reads, and it discovers replicas by label (get/list/watch pods only).

Invariants: the route's request timeout and the backend policy's timeout cover the longest
generation we drain for; the health check policy probes vLLM's /health (GKE's default probe of
"/" would mark every vLLM backend unhealthy); no image of the upstream variant names inferstack.
"""

from __future__ import annotations

from typing import Any

import yaml

from inferstack.errors import ConfigError
from inferstack.gateway.settings import SaturationSettings, SchedulerSettings, ScorerSettings
from inferstack.kube.batch import batch_objective_name
from inferstack.kube.lora import adapter_objectives, adapter_priority
from inferstack.kube.serving import CONTAINER_SECURITY, POD_SECURITY, pod_monitoring
from inferstack.kube.stack import (AUTH_KEYS_FILE, AUTH_SERVICE_KEY_FILE, EPP_GRPC_HEALTH_PORT, EPP_GRPC_PORT,
                                   EPP_METRICS_PORT, VLLM_PORT, Stack)
from inferstack.kube.upstream_epp import check_picker_config, upstream_picker_config

__all__ = ["epp_config", "epp_name", "gateway_objects", "upstream_epp_config"]

EPP_CONFIG_DIR = "/etc/inferstack"
UPSTREAM_CONFIG_DIR = "/config"
UPSTREAM_CONFIG_FILE = "epp-config.yaml"


def epp_name(stack: Stack) -> str:
    return f"{stack.name}-epp"


def _scheduler(stack: Stack) -> SchedulerSettings:
    """The scheduler both pickers get: our local gateway's defaults (queue, kv-cache and prefix
    scorers at weight 1, max-score picker), plus the LoRA affinity scorer at weight 1 when the pods
    serve adapters (upstream: lora-affinity-scorer)."""
    scheduler = SchedulerSettings()
    if stack.lora:
        scheduler = scheduler.model_copy(update={"scorers": [*scheduler.scorers, ScorerSettings(type="lora")]})
    return scheduler


def epp_config(stack: Stack) -> dict[str, Any]:
    """epp.yaml: our endpoint picker's configuration (shared schema with the local gateway)."""
    scheduler = _scheduler(stack)
    flow = stack.settings.gateway.flow_control
    auth: dict[str, Any] = {}
    if stack.settings.gateway.auth_secret:
        auth["auth_file"] = AUTH_KEYS_FILE
        if stack.settings.batch.enabled:  # the batch service names the tenant its lines run for
            auth["service_key_file"] = AUTH_SERVICE_KEY_FILE
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
            "scorers": [{"type": s.type, "weight": int(s.weight) if s.weight.is_integer() else s.weight}
                        for s in scheduler.scorers],
            "picker": scheduler.picker,
        },
        "objectives": [{"model": stack.served_name, "priority": stack.settings.gateway.priority},
                       *({"model": a.name, "priority": adapter_priority(stack)} for a in stack.adapters),
                       *([{"name": batch_objective_name(stack), "priority": stack.settings.batch.priority}]
                         if stack.settings.batch.enabled else [])],
        **auth,
        **({"flow_control": flow.model_dump(mode="json")} if flow.enabled else {}),
    }


def upstream_epp_config(stack: Stack) -> dict[str, Any]:
    """The upstream EndpointPickerConfig, refused (ConfigError) unless it passes the checker."""
    config = upstream_picker_config(_scheduler(stack), SaturationSettings(), stack.settings.gateway.flow_control)
    problems = check_picker_config(config)
    if problems:
        raise ConfigError("upstream EndpointPickerConfig: " + "; ".join(problems))
    return config


def _inferstack_deployment(stack: Stack) -> dict[str, Any]:
    name = epp_name(stack)
    # Our EPP answers grpc.health.v1 on its ext_proc port (EppSettings.grpc_port), so the probes
    # use that port; no separate health port is declared that nothing would listen on.
    probe = {"grpc": {"port": EPP_GRPC_PORT}, "periodSeconds": 5, "timeoutSeconds": 2}
    auth_volumes, auth_mounts = stack.auth_volume()
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": stack.meta(name, "endpoint-picker", app=name),
        "spec": {
            "replicas": stack.settings.gateway.picker_replicas,
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
                        "image": str(stack.settings.images.epp),
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
                            *auth_mounts,
                        ],
                        "securityContext": {**CONTAINER_SECURITY, "readOnlyRootFilesystem": True},
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": name}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                        *auth_volumes,
                    ],
                },
            },
        },
    }


def _upstream_deployment(stack: Stack) -> dict[str, Any]:
    """The upstream EPP as the GIE v1.5.0 chart deploys it (epplib/templates/_deployment.yaml)."""
    name = epp_name(stack)
    gw = stack.settings.gateway
    args = [
        "--pool-name", stack.name,
        "--pool-namespace", stack.namespace,
        "--pool-group", "inference.networking.k8s.io",
        "--zap-encoder", "json",
        "--config-file", f"{UPSTREAM_CONFIG_DIR}/{UPSTREAM_CONFIG_FILE}",
        f"--refresh-metrics-interval={gw.scrape_interval_ms}ms",
        # Plain /metrics for Managed Prometheus (the chart's auth needs a token Secret and a
        # ClusterRole for token reviews), and no OTLP collector to send traces to.
        "--metrics-endpoint-auth=false",
        "--tracing=false",
    ]
    if gw.picker_replicas > 1:
        args.append("--ha-enable-leader-election")
    # The EPP's grpc.health.v1 services: one name alone, split by role under leader election.
    single = gw.picker_replicas == 1
    liveness, readiness = ("inference-extension",) * 2 if single else ("liveness", "readiness")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": stack.meta(name, "endpoint-picker", app=name),
        "spec": {
            "replicas": gw.picker_replicas,
            # One active picker at a time (prefix-cache state lives in it), as the chart does.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": stack.labels("endpoint-picker", app=name)},
                "spec": {
                    "serviceAccountName": name,
                    # The chart: at least the longest grace period of the pool's pods would be ideal;
                    # 130 s is its default.
                    "terminationGracePeriodSeconds": 130,
                    "securityContext": {**POD_SECURITY, "runAsNonRoot": True, "runAsUser": 65532,
                                        "runAsGroup": 65532},
                    "containers": [{
                        "name": "epp",
                        "image": stack.settings.images.epp_upstream,
                        "args": args,
                        "env": [
                            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        ],
                        "ports": [
                            {"name": "grpc", "containerPort": EPP_GRPC_PORT, "protocol": "TCP"},
                            {"name": "grpc-health", "containerPort": EPP_GRPC_HEALTH_PORT, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": EPP_METRICS_PORT, "protocol": "TCP"},
                        ],
                        "livenessProbe": {"grpc": {"port": EPP_GRPC_HEALTH_PORT, "service": liveness},
                                          "initialDelaySeconds": 5, "periodSeconds": 10},
                        "readinessProbe": {"grpc": {"port": EPP_GRPC_HEALTH_PORT, "service": readiness},
                                           "periodSeconds": 2},
                        # The chart's sizing ("validated with scale testing at high QPS").
                        "resources": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
                        "volumeMounts": [
                            {"name": "config", "mountPath": UPSTREAM_CONFIG_DIR, "readOnly": True},
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


def _epp_rules(stack: Stack) -> list[dict[str, Any]]:
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    gw = stack.settings.gateway
    if gw.epp == "upstream":
        rules += [
            {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["inference.networking.x-k8s.io"],
             "resources": ["inferenceobjectives", "inferencemodelrewrites"], "verbs": ["get", "list", "watch"]},
        ]
        if gw.picker_replicas > 1:
            rules += [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            ]
    return rules


def _epp_service(stack: Stack) -> dict[str, Any]:
    name = epp_name(stack)
    grpc: dict[str, Any] = {"name": "grpc-ext-proc", "port": EPP_GRPC_PORT, "targetPort": EPP_GRPC_PORT,
                            "protocol": "TCP"}
    if stack.settings.gateway.epp == "inferstack":
        grpc["appProtocol"] = "http2"  # ours speaks cleartext HTTP/2; the upstream EPP serves TLS
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": stack.meta(name, "endpoint-picker", app=name),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": name},
            "ports": [
                grpc,
                {"name": "metrics", "port": EPP_METRICS_PORT, "targetPort": EPP_METRICS_PORT, "protocol": "TCP"},
            ],
        },
    }


def _pool_ref(stack: Stack) -> dict[str, str]:
    return {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": stack.name}


def _gke_policies(stack: Stack) -> list[dict[str, Any]]:
    """What the GIE chart renders for provider gke: a health check on vLLM's /health (fast, for
    quick failover) and a backend policy whose timeout lets long generations finish."""
    timeout = stack.settings.gateway.backend_timeout_s or stack.request_timeout_s
    return [
        {
            "apiVersion": "networking.gke.io/v1",
            "kind": "HealthCheckPolicy",
            "metadata": stack.meta(stack.name, "health-check-policy"),
            "spec": {
                "targetRef": _pool_ref(stack),
                "default": {
                    "timeoutSec": 2,
                    "checkIntervalSec": 2,
                    "config": {"type": "HTTP", "httpHealthCheck": {"requestPath": "/health", "port": VLLM_PORT}},
                },
            },
        },
        {
            "apiVersion": "networking.gke.io/v1",
            "kind": "GCPBackendPolicy",
            "metadata": stack.meta(stack.name, "backend-policy"),
            "spec": {
                "targetRef": _pool_ref(stack),
                "default": {"timeoutSec": timeout, "logging": {"enabled": True}},
            },
        },
    ]


def gateway_objects(stack: Stack) -> list[dict[str, Any]]:
    name = epp_name(stack)
    gw = stack.settings.gateway
    if gw.epp == "upstream":
        config_data = {UPSTREAM_CONFIG_FILE: yaml.safe_dump(upstream_epp_config(stack), sort_keys=False,
                                                            default_flow_style=False)}
        deployment = _upstream_deployment(stack)
    else:
        config_data = {"epp.yaml": yaml.safe_dump(epp_config(stack), sort_keys=False, default_flow_style=False)}
        deployment = _inferstack_deployment(stack)
    return [
        {
            "apiVersion": "inference.networking.k8s.io/v1",
            "kind": "InferencePool",
            "metadata": stack.meta(stack.name, "inference-pool"),
            "spec": {
                "selector": {"matchLabels": {"app": stack.name}},
                "targetPorts": [{"number": VLLM_PORT}],
                "appProtocol": "http",
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
        *adapter_objectives(stack, stack.name),
        *_gke_policies(stack),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": stack.meta(name, "endpoint-picker", app=name),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": stack.meta(name, "endpoint-picker", app=name),
            "rules": _epp_rules(stack),
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
            "data": config_data,
        },
        deployment,
        _epp_service(stack),
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
                    "backendRefs": [_pool_ref(stack)],
                    "timeouts": {"request": f"{stack.request_timeout_s}s"},
                }],
            },
        },
    ]
