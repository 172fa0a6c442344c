"""Completion tracking: which routed requests are still running, so load is known between scrapes.

The scheduler counts a pick on its endpoint (``Endpoint.in_flight`` and ``in_flight_tokens``);
this ledger remembers each pick by Envoy's request id and undoes it when Envoy's access log
reports the response ended (``complete``). A request whose end never arrives (an access-log
entry lost while the EPP restarted, a stream Envoy dropped) is undone after ``max_age_s`` by
``expire``, so counts cannot grow without bound.
It also counts the open requests per tenant (``of_tenant``): flow control lets a tenant with nothing
running use an endpoint's reserved room.
Invariants: each pick is undone at most once; counts never go below 0; O(1) per event.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from inferstack.gateway.datastore import Endpoint

__all__ = ["Completed", "InFlightLedger", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """The tokens of one ended response as Envoy reported them (None: not known). ``reported``:
    vLLM's own ``usage``; else the completion tokens were counted from the stream's events."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reported: bool = False
    cached_tokens: int | None = None  # of the prompt, served from vLLM's prefix cache


@dataclass(frozen=True, slots=True)
class Completed:
    """What the ledger knew of a request that ended: its tenant, its estimated prompt tokens and
    the weighted tokens fair queuing charged it at dispatch (0: none)."""
    tenant: str
    prompt_tokens: int
    charged: float


class InFlightLedger:
    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        # request id -> (endpoint, tokens, started, tenant, charged); insertion order = start order, for expiry
        self._open: OrderedDict[str, tuple[Endpoint, int, float, str, float]] = OrderedDict()
        self._by_tenant: dict[str, int] = {}
        self.completed = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._open)

    def of_tenant(self, tenant: str) -> int:
        return self._by_tenant.get(tenant, 0)

    def start(self, request_id: str, endpoint: Endpoint, tokens: int, now: float | None = None,
              tenant: str = "", charged: float = 0.0) -> None:
        if not request_id:
            return
        old = self._open.pop(request_id, None)
        if old is not None:  # a retried id: undo the earlier pick first
            self._undo(old)
        self._open[request_id] = (endpoint, tokens, time.monotonic() if now is None else now, tenant, charged)
        self._by_tenant[tenant] = self._by_tenant.get(tenant, 0) + 1

    def complete(self, request_id: str) -> Completed | None:
        entry = self._open.pop(request_id, None)
        if entry is None:
            return None  # not ours (answered by the EPP itself, or from before a restart)
        self._undo(entry)
        self.completed += 1
        return Completed(entry[3], entry[1], entry[4])

    def expire(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        n = 0
        while self._open:
            rid, entry = next(iter(self._open.items()))
            if now - entry[2] <= self.max_age_s:
                break
            del self._open[rid]
            self._undo(entry)
            n += 1
        self.expired += n
        return n

    def forget_endpoint(self, address: str) -> None:
        for rid in [r for r, entry in self._open.items() if entry[0].address == address]:
            self._untenant(self._open.pop(rid)[3])

    def _undo(self, entry: tuple[Endpoint, int, float, str, float]) -> None:
        ep, tokens, _, tenant, _ = entry
        ep.in_flight = max(0, ep.in_flight - 1)
        ep.in_flight_tokens = max(0, ep.in_flight_tokens - tokens)
        self._untenant(tenant)

    def _untenant(self, tenant: str) -> None:
        n = self._by_tenant.get(tenant, 0) - 1
        if n > 0:
            self._by_tenant[tenant] = n
        else:
            self._by_tenant.pop(tenant, None)
