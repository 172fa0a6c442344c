"""``render --monitoring``: what Google Managed Prometheus needs beyond the PodMonitorings the
replicas and the picker already carry: one for the batch service, the stack's recording rules and
alerts as a GMP ``Rules`` object (the same rules the local Prometheus loads, with the scrape jobs
named as GMP names them: the PodMonitorings' names), and the Grafana dashboards as a ConfigMap
(labelled for Grafana's dashboard sidecar). Envoy's alert is left out: GKE's gateway is not our
Envoy. Panels on Envoy's and the local supervisor's series stay empty on GKE (docs/kube.md).
"""

from __future__ import annotations

from typing import Any

from inferstack.kube.batch import batch_name
from inferstack.kube.gateway import epp_name
from inferstack.kube.serving import pod_monitoring
from inferstack.kube.stack import Stack
from inferstack.monitoring.dashboards import render_files
from inferstack.monitoring.rules import rules_document

__all__ = ["monitoring_objects"]


def monitoring_objects(stack: Stack) -> list[dict[str, Any]]:
    settings = stack.settings
    objects: list[dict[str, Any]] = []
    if settings.batch.enabled:
        name = batch_name(stack)
        objects.append(pod_monitoring(stack, name, name, port="http"))
    jobs = {"replicas": stack.name, "picker": epp_name(stack) if settings.gateway.enabled else "none"}
    rules = rules_document(jobs, envoy=False)
    for group in rules["groups"]:  # type: ignore[attr-defined]
        group["interval"] = "30s"
    objects.append({
        "apiVersion": "monitoring.googleapis.com/v1", "kind": "Rules",
        "metadata": stack.meta(f"{stack.name}-rules", "monitoring"),
        "spec": rules,
    })
    dashboards = stack.meta(f"{stack.name}-dashboards", "monitoring")
    dashboards["labels"]["grafana_dashboard"] = "1"
    objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": dashboards, "data": render_files()})
    return objects
