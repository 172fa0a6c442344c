"""Completion tracking: which routed requests are still running, so load is known between scrapes.

The scheduler counts a pick on its endpoint (``Endpoint.in_flight`` and ``in_flight_tokens``);
this ledger remembers each pick by Envoy's request id and undoes it when Envoy's access log
reports the response ended (``complete``). A request whose end never arrives (an access-log
entry lost while the EPP restarted, a stream Envoy dropped) is undone after ``max_age_s`` by
``expire``, so counts cannot grow without bound.
It also counts the open requests per tenant (``of_tenant``): flow control lets a tenant with nothing
running use an endpoint's reserved room.
With several pickers (``gateway.pickers``) each also counts the requests the others routed
(``start_peer``: Envoy's upstream log reports their start to every picker); a peer's request whose
end was reported first (the two logs are separate streams) is not started afterwards.
Invariants: each pick is undone at most once; counts never go below 0; O(1) per event; the ids of
ends with no start are remembered (with peers only), bounded (``_ENDED_KEPT``).
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
    peer: bool = False  # routed by another picker: its usage is that picker's to report
    predicted_cached: int | None = None  # the cached prompt tokens the picker predicted (KV events on)


class _Open:
    __slots__ = ("done", "endpoint", "started")

    def __init__(self, endpoint: Endpoint, started: float, done: Completed) -> None:
        self.endpoint, self.started, self.done = endpoint, started, done  # done: what its end reports


_ENDED_KEPT = 8192  # ends seen before their start: a peer's upstream log can arrive after its end


class InFlightLedger:
    def __init__(self, max_age_s: float, peers: bool = False) -> None:
        self.max_age_s = max_age_s
        self.peers = peers  # other pickers report starts: remember ends that came first
        # request id -> its open entry; insertion order = start order, for expiry
        self._open: OrderedDict[str, _Open] = OrderedDict()
        self._ended: OrderedDict[str, None] = OrderedDict()  # ends with no start (yet)
        self._by_tenant: dict[str, int] = {}
        self.completed = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._open)

    def of_tenant(self, tenant: str) -> int:
        return self._by_tenant.get(tenant, 0)

    def start(self, request_id: str, endpoint: Endpoint, tokens: int, now: float | None = None,
              tenant: str = "", charged: float = 0.0, predicted_cached: int | None = None) -> None:
        if not request_id:
            return
        old = self._open.pop(request_id, None)
        if old is not None:  # a retried id: undo the earlier pick first
            self._undo(old)
        self._add(request_id, _Open(endpoint, time.monotonic() if now is None else now,
                                    Completed(tenant, tokens, charged, False, predicted_cached)))

    def start_peer(self, request_id: str, endpoint: Endpoint, tokens: int, now: float, tenant: str,
                   charged: float) -> bool:
        """Another picker routed this request to ``endpoint``: count it here too. False (nothing
        counted) for a request known here (ours, a retry's second attempt) or one already ended."""
        if not request_id or request_id in self._open or request_id in self._ended:
            return False
        endpoint.in_flight += 1  # our own picks are counted by the scheduler
        endpoint.in_flight_tokens += tokens
        self._add(request_id, _Open(endpoint, now, Completed(tenant, tokens, charged, True)))
        return True

    def _add(self, request_id: str, entry: _Open) -> None:
        self._open[request_id] = entry
        self._by_tenant[entry.done.tenant] = self._by_tenant.get(entry.done.tenant, 0) + 1

    def complete(self, request_id: str) -> Completed | None:
        entry = self._open.pop(request_id, None)
        if entry is None:  # answered by a picker itself, from before a restart, or a peer's not yet started
            if self.peers:
                self._ended[request_id] = None
                if len(self._ended) > _ENDED_KEPT:
                    self._ended.popitem(last=False)
            return None
        self._undo(entry)
        self.completed += 1
        return entry.done

    def expire(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        n = 0
        while self._open:
            rid, entry = next(iter(self._open.items()))
            if now - entry.started <= self.max_age_s:
                break
            del self._open[rid]
            self._undo(entry)
            n += 1
        self.expired += n
        return n

    def forget_endpoint(self, address: str) -> None:
        for rid in [r for r, entry in self._open.items() if entry.endpoint.address == address]:
            self._untenant(self._open.pop(rid).done.tenant)

    def _undo(self, entry: _Open) -> None:
        ep, done = entry.endpoint, entry.done
        ep.in_flight = max(0, ep.in_flight - 1)
        ep.in_flight_tokens = max(0, ep.in_flight_tokens - done.prompt_tokens)
        self._untenant(done.tenant)

    def _untenant(self, tenant: str) -> None:
        n = self._by_tenant.get(tenant, 0) - 1
        if n > 0:
            self._by_tenant[tenant] = n
        else:
            self._by_tenant.pop(tenant, None)
