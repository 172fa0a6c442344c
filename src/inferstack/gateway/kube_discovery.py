"""Kubernetes pod watcher: endpoints are the ready pods matching an InferencePool-style selector.

Talks to the API server from inside a pod (service-account token and CA under
``/var/run/secrets/kubernetes.io/serviceaccount``, ``KUBERNETES_SERVICE_HOST/PORT``): one LIST, then
a WATCH from its resourceVersion, re-listing after a 410 Gone or a dropped stream.
``PodSet.apply(event)`` holds the logic (unit-tested on recorded watch events): a pod counts when it
has a podIP, is not being deleted, its phase is Running and its Ready condition is True; the
endpoint is ``podIP:target_port``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import httpx

from inferstack.gateway.discovery import Discovery, OnChange
from inferstack.gateway.settings import KubernetesDiscovery

__all__ = ["KubernetesPodDiscovery", "PodSet", "pod_endpoint"]

log = logging.getLogger(__name__)
_SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def pod_endpoint(pod: dict, target_port: int) -> str | None:
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    if meta.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
        return None
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    return f"{status['podIP']}:{target_port}" if ready else None


class PodSet:
    """Ready endpoints by pod name, fed with LIST items and WATCH events."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._by_pod: dict[str, str] = {}

    def endpoints(self) -> list[str]:
        return sorted(set(self._by_pod.values()))

    def reset(self, pods: list[dict]) -> None:
        self._by_pod.clear()
        for pod in pods:
            self._set(pod)

    def _set(self, pod: dict) -> None:
        name = pod.get("metadata", {}).get("name", "")
        ep = pod_endpoint(pod, self.target_port)
        if ep is None:
            self._by_pod.pop(name, None)
        else:
            self._by_pod[name] = ep

    def apply(self, event: dict) -> bool:
        """Apply one watch event; True if the endpoint set changed."""
        before = self.endpoints()
        kind, pod = event.get("type"), event.get("object", {})
        if kind in ("ADDED", "MODIFIED"):
            self._set(pod)
        elif kind == "DELETED":
            self._by_pod.pop(pod.get("metadata", {}).get("name", ""), None)
        return self.endpoints() != before


class KubernetesPodDiscovery(Discovery):
    def __init__(self, settings: KubernetesDiscovery) -> None:
        self.settings = settings
        self.pods = PodSet(settings.target_port)

    def _client(self) -> httpx.AsyncClient:
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        token = (_SA / "token").read_text().strip()
        return httpx.AsyncClient(base_url=f"https://{host}:{port}", verify=str(_SA / "ca.crt"),
                                 headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(10, read=None))

    async def run(self, on_change: OnChange) -> None:
        selector = ",".join(f"{k}={v}" for k, v in self.settings.label_selector.items())
        path = f"/api/v1/namespaces/{self.settings.namespace}/pods"
        async with self._client() as client:
            while True:
                try:
                    resp = await client.get(path, params={"labelSelector": selector})
                    resp.raise_for_status()
                    listing = resp.json()
                    self.pods.reset(listing.get("items", []))
                    on_change(self.pods.endpoints())
                    version = listing.get("metadata", {}).get("resourceVersion", "")
                    params = {"labelSelector": selector, "watch": "1", "resourceVersion": version,
                              "allowWatchBookmarks": "true"}
                    async with client.stream("GET", path, params=params) as stream:
                        async for line in stream.aiter_lines():
                            if not line:
                                continue
                            event = json.loads(line)
                            if event.get("type") == "ERROR":
                                log.info("pod watch ended: %s; re-listing", event.get("object", {}).get("message"))
                                break
                            if self.pods.apply(event):
                                on_change(self.pods.endpoints())
                except (httpx.HTTPError, ValueError) as exc:
                    log.warning("pod watch in %s failed (%r); retrying in 1 s", self.settings.namespace, exc)
                    await asyncio.sleep(1.0)
