"""Scale from zero: the check that Envoy can route to a new endpoint (held requests themselves wait
in ``gateway/waiting.py``).

``EnvoyLoadWatch``: the EPP mirrors endpoints into an EDS file that Envoy loads some ms later
(measured here: 3.5-50 ms median, up to 84 ms, growing with the machine's load), while the EPP
may see the new endpoint ready sooner (its first scrape takes a few ms); a held request released
before Envoy has loaded it gets Envoy's 503 "no healthy upstream". So a new endpoint is
``pending`` until Envoy's admin (``/clusters``) lists it in the pool: in 80 measured loads Envoy
routed to it no later than its admin listed it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

import httpx


__all__ = ["EnvoyLoadWatch", "envoy_pool_hosts"]

log = logging.getLogger(__name__)


HostKey = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def _host_key(host: str, port: int) -> HostKey:
    return ipaddress.ip_address(host.strip("[]")), port


def _address_key(address: str) -> HostKey:
    host, _, port = address.rpartition(":")
    return _host_key(host, int(port))


def envoy_pool_hosts(clusters: dict, cluster_name: str) -> set[HostKey]:
    """The (ip, port) of each host of ``cluster_name`` in Envoy's ``/clusters?format=json``."""
    hosts = set()
    for cluster in clusters.get("cluster_statuses", []):
        if cluster.get("name") == cluster_name:
            for h in cluster.get("host_statuses", []):
                sock = h["address"]["socket_address"]
                hosts.add(_host_key(sock["address"], int(sock["port_value"])))
    return hosts


class EnvoyLoadWatch:
    """Tracks which published endpoints Envoy has not loaded yet (``pending``); calls ``on_loaded``
    once it has loaded all of them. Without an admin port nothing is ever pending."""

    def __init__(self, admin_port: int | None, cluster_name: str, on_loaded: Callable[[], None],
                 client: httpx.AsyncClient | None = None) -> None:
        self._url = f"http://127.0.0.1:{admin_port}/clusters?format=json" if admin_port is not None else None
        self._cluster = cluster_name
        self._on_loaded = on_loaded
        self._client = client
        self.pending: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def published(self, addresses: list[str], added: list[str]) -> None:
        """The EDS file now lists ``addresses`` (``added`` are new): wait until Envoy has them."""
        if self._url is None:
            return
        self.pending = (self.pending & set(addresses)) | set(added)
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.create_task(self._wait(set(self.pending)), name="envoy eds load") if self.pending else None

    async def _wait(self, wanted: set[str]) -> None:
        keys = {_address_key(a) for a in wanted}
        client = self._client or httpx.AsyncClient(timeout=1.0)
        delay = 0.005
        try:
            while not keys <= await self._hosts(client):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)  # Envoy is usually there in ms; if it is down, do not spin
        finally:
            if client is not self._client:
                await client.aclose()
        self.pending -= wanted
        log.info("Envoy has loaded endpoints %s", sorted(wanted))
        self._on_loaded()

    async def _hosts(self, client: httpx.AsyncClient) -> set[HostKey]:
        assert self._url is not None
        try:
            resp = await client.get(self._url)
            resp.raise_for_status()
            return envoy_pool_hosts(resp.json(), self._cluster)
        except (httpx.HTTPError, ValueError, KeyError) as exc:  # Envoy starting or restarting: ask again
            log.debug("Envoy admin %s not usable yet: %r", self._url, exc)
            return set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
