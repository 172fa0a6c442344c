"""The EPP's view of its endpoints: address, readiness, the latest scraped vLLM metrics and the
model names each serves (its ``GET /v1/models``, polled by ``served_models.ModelsPoller``).

Invariants: the scheduler only reads this state (no I/O on the hot path); metrics older than the
staleness bound make an endpoint "unknown" (``fresh() is False``), never idle. ``in_flight`` and
``in_flight_tokens`` count the requests (and their estimated prompt tokens) the EPP routed to the
endpoint and that have not completed, so load is known between scrapes: with completion tracking
(Envoy's access log tells the EPP when each response ended) they drop at the end of each response;
without it ("scrape" mode) a fresh scrape resets them, its own queue numbers then including them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Datastore", "Endpoint", "EndpointMetrics"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EndpointMetrics:
    waiting: float = 0.0
    running: float = 0.0
    kv_usage: float = 0.0
    active_loras: frozenset[str] = frozenset()
    waiting_loras: frozenset[str] = frozenset()
    max_loras: int = 0
    block_size: int = 0
    scraped_at: float = 0.0  # time.monotonic() of the scrape; 0 = never


@dataclass(slots=True, eq=False)
class Endpoint:
    address: str  # "host:port"
    ready: bool = False
    metrics: EndpointMetrics = field(default_factory=EndpointMetrics)
    in_flight: int = 0
    in_flight_tokens: int = 0
    consecutive_failures: int = 0
    # True: in_flight counts every routed request until its end is reported (completion tracking);
    # False: only those routed since the last scrape (which does not show them yet)
    tracked: bool = False
    # ids listed by the endpoint's GET /v1/models (base models and LoRA adapters); None: not known yet
    served_models: frozenset[str] | None = None
    served_adapters: frozenset[str] = frozenset()  # those of them with a parent model (LoRA adapters)
    model_entries: tuple[dict[str, Any], ...] = ()  # the list's entries as served (for the union)

    def serves(self, model: str) -> bool:
        """True unless the endpoint's model list is known and lacks ``model``."""
        s = self.served_models
        return s is None or model in s

    def fresh(self, staleness_s: float, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.metrics.scraped_at > 0 and now - self.metrics.scraped_at <= staleness_s

    def queue(self) -> float:
        """Requests waiting at the endpoint. Tracked: the scraped ones, or what our count (newer than
        the scrape) implies beyond the scraped running ones; untracked: scraped + sent since."""
        m = self.metrics
        if self.tracked:
            return max(m.waiting, self.in_flight - m.running)
        return m.waiting + self.in_flight

    def load(self) -> float:
        """Outstanding requests (waiting + running), by the scrape and our count together."""
        m = self.metrics
        if self.tracked:
            return max(m.waiting + m.running, float(self.in_flight))
        return m.waiting + m.running + self.in_flight


class Datastore:
    """Endpoints by address. ``set_addresses`` is called by discovery; the scraper updates metrics."""

    def __init__(self, reset_in_flight_on_scrape: bool = True) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self._reset_in_flight = reset_in_flight_on_scrape
        self.version = 0  # bumped on membership change, so readers can cache derived lists

    def set_addresses(self, addresses: list[str]) -> tuple[list[str], list[str]]:
        """Replace the membership; keep state of endpoints that stay. Returns (added, removed)."""
        wanted = list(dict.fromkeys(addresses))
        added = [a for a in wanted if a not in self._endpoints]
        removed = [a for a in self._endpoints if a not in wanted]
        for a in removed:
            del self._endpoints[a]
        for a in added:
            self._endpoints[a] = Endpoint(a, tracked=not self._reset_in_flight)
        if added or removed:
            self.version += 1
            log.info("endpoints now %s (added %s, removed %s)", wanted, added, removed)
        return added, removed

    def get(self, address: str) -> Endpoint | None:
        return self._endpoints.get(address)

    def all(self) -> list[Endpoint]:
        return list(self._endpoints.values())

    def ready(self) -> list[Endpoint]:
        return [e for e in self._endpoints.values() if e.ready]

    def update_metrics(self, address: str, metrics: EndpointMetrics) -> None:
        ep = self._endpoints.get(address)
        if ep is None:
            return
        if not ep.ready:
            log.info("endpoint %s is ready", address)
        ep.metrics, ep.ready, ep.consecutive_failures = metrics, True, 0
        if self._reset_in_flight:
            ep.in_flight = ep.in_flight_tokens = 0

    def set_served_models(self, address: str, models: frozenset[str], adapters: frozenset[str],
                          entries: tuple[dict[str, Any], ...] = ()) -> bool:
        """Record what ``address`` serves (from its /v1/models); True when the ids changed (the
        entries are kept either way: vLLM stamps ``created`` at every answer)."""
        ep = self._endpoints.get(address)
        if ep is None:
            return False
        ep.model_entries = entries
        if ep.served_models == models and ep.served_adapters == adapters:
            return False
        before = ep.served_models
        ep.served_models, ep.served_adapters = models, adapters
        log.info("endpoint %s serves %s%s", address, sorted(models),
                 "" if before is None else f" (was {sorted(before)})")
        return True

    def mark_failed(self, address: str, reason: str, max_failures: int = 1) -> None:
        ep = self._endpoints.get(address)
        if ep is None:
            return
        ep.consecutive_failures += 1
        if ep.ready and ep.consecutive_failures >= max_failures:
            ep.ready = False
            log.warning("endpoint %s dropped out: %s", address, reason)
