"""In a Kubernetes pod: the URL of the Gateway the batch service sends its lines through.

GKE gives a Gateway its address when it is programmed (``status.addresses``), not at render time,
so the batch Deployment runs ``inferstack batch serve --gateway-from-kubernetes NAME`` and this
module reads the Gateway from the API server (service-account token and CA, as the EPP's pod
discovery does), waiting until it has an address. Needs RBAC ``get`` on
``gateways.gateway.networking.k8s.io`` (the rendered Role grants it).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx

from inferstack.errors import SetupError

__all__ = ["gateway_url_from_status", "resolve_gateway_url"]

log = logging.getLogger(__name__)
_SA = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def gateway_url_from_status(gateway: dict[str, Any]) -> str | None:
    """``http://ADDRESS[:PORT]`` of a Gateway object's first address and HTTP listener, or None."""
    addresses = (gateway.get("status") or {}).get("addresses") or []
    if not addresses or not addresses[0].get("value"):
        return None
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    port = next((ln.get("port") for ln in listeners if ln.get("protocol") == "HTTP"), 80)
    host = addresses[0]["value"]
    return f"http://{host}" if port == 80 else f"http://{host}:{port}"


def resolve_gateway_url(name: str, namespace: str | None = None, timeout_s: float = 900.0) -> str:
    """Wait until the Gateway ``name`` has an address; SetupError outside a pod or after the timeout."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host or not (_SA / "token").exists():
        raise SetupError("--gateway-from-kubernetes works inside a Kubernetes pod only (no service-account "
                         "token); pass the gateway URL in the config's 'gateway_url' instead")
    namespace = namespace or (_SA / "namespace").read_text().strip()
    url = f"https://{host}:{port}/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/gateways/{name}"
    deadline = time.monotonic() + timeout_s
    last_log = 0.0
    while True:
        token = (_SA / "token").read_text().strip()  # rotated by the kubelet: read each time
        try:
            resp = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, verify=str(_SA / "ca.crt"),
                             timeout=10.0)
            found = gateway_url_from_status(resp.json()) if resp.status_code == 200 else None
            problem = f"HTTP {resp.status_code}" if resp.status_code != 200 else "no address yet"
        except (httpx.HTTPError, ValueError) as exc:
            found, problem = None, str(exc)
        if found:
            log.info("gateway %s/%s is at %s", namespace, name, found)
            return found
        if time.monotonic() > deadline:
            raise SetupError(f"gateway {namespace}/{name} has no address after {timeout_s:.0f}s ({problem})")
        if time.monotonic() - last_log > 30:
            log.info("waiting for gateway %s/%s to get an address (%s)", namespace, name, problem)
            last_log = time.monotonic()
        time.sleep(5)
