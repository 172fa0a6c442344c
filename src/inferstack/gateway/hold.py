"""Scale from zero: requests held while no endpoint is ready, and the check that Envoy can route.

``HoldQueue`` keeps held requests in arrival order, at most ``max_requests``, each with a deadline;
the EPP answers each one later through its future: the routing decision when ``release`` finds a
routable endpoint, a JSON 503 at the deadline. Cancelling a future (the client left, so the
transport reset the stream) takes that request out. Every end is counted in the EPP metrics
(``inferstack_epp_held_requests`` now, ``inferstack_epp_hold_outcomes_total``,
``inferstack_epp_hold_seconds``).

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
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from inferstack.gateway.decision import Decision, Phase
from inferstack.gateway.epp_metrics import EppMetrics
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.settings import HoldSettings

__all__ = ["EnvoyLoadWatch", "Held", "HoldQueue", "envoy_pool_hosts"]

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Held:
    """One held request: what its routing decision needs, and how to answer it."""

    req: InferenceRequest
    phase: Phase
    body: bytes
    request_id: str
    since: float
    future: asyncio.Future[Decision]
    timer: asyncio.TimerHandle | None = None


class HoldQueue:
    def __init__(self, settings: HoldSettings, metrics: EppMetrics,
                 timed_out: Callable[[Held], Decision]) -> None:
        self.settings = settings
        self._metrics = metrics
        self._timed_out = timed_out  # the answer at the deadline (a JSON 503 saying why)
        self._held: dict[int, Held] = {}  # insertion order = arrival order
        self._next = 0

    def __len__(self) -> int:
        return len(self._held)

    def add(self, req: InferenceRequest, phase: Phase, body: bytes,
            request_id: str) -> asyncio.Future[Decision] | None:
        """Hold a request; its future gets the decision. None when the queue is full."""
        if len(self._held) >= self.settings.max_requests:
            self._metrics.hold_outcomes.labels("full").inc()
            return None
        loop = asyncio.get_running_loop()
        key, self._next = self._next, self._next + 1
        item = Held(req, phase, body, request_id, time.monotonic(), loop.create_future())
        item.timer = loop.call_later(self.settings.timeout_s, self._expire, key)
        item.future.add_done_callback(lambda f: self._cancelled(key) if f.cancelled() else None)
        self._held[key] = item
        self._metrics.held.set(len(self._held))
        return item.future

    def release(self, decide: Callable[[Held], Decision]) -> None:
        """Answer every held request, oldest first, with ``decide(held)``."""
        while self._held:
            key = next(iter(self._held))
            item = self._end(key, "routed")
            try:
                answer = decide(item)
            except Exception as exc:  # one bad decision fails that request only (INTERNAL)
                log.exception("deciding a held request failed")
                item.future.set_exception(exc)
            else:
                item.future.set_result(answer)

    def _end(self, key: int, outcome: str) -> Held:
        item = self._held.pop(key)
        if item.timer is not None:
            item.timer.cancel()
        self._metrics.held.set(len(self._held))
        self._metrics.hold_outcomes.labels(outcome).inc()
        self._metrics.hold_seconds.labels(outcome).observe(time.monotonic() - item.since)
        return item

    def _expire(self, key: int) -> None:
        if key in self._held:
            item = self._end(key, "timeout")
            item.future.set_result(self._timed_out(item))

    def _cancelled(self, key: int) -> None:
        if key in self._held:
            self._end(key, "cancelled")


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
