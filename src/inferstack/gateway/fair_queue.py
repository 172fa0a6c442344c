"""The order in which waiting requests leave the picker: a pure queue discipline, no clock, no I/O.

Bands by priority, strictly: a request of a higher priority always leaves before a lower one
(batch lines, priority < 0, wait the longest). Inside a band, tenants take turns by VTC, the
Virtual Token Counter of "Fairness in Serving Large Language Models" (Sheng et al., OSDI'24): one
counter of weighted tokens served per tenant (``charge``: input x1, output x2, llm-d's weights);
the backlogged tenant with the lowest counter goes next (on a tie, the one with fewer waiting); a
tenant that becomes backlogged is first lifted to the lowest counter among the band's backlogged
tenants (to the last served tenant's counter when none is), so idle time is never saved up as
credit. That keeps the service gap between two backlogged tenants within a bound set by the
largest charge of one request, however long they stay backlogged (the paper proves it; our unit
tests check it on random traces). Inside a tenant: first come, first served.
Invariants: ``len`` counts every queued item once; a band or tenant entry exists only while it
holds an item; counters never decrease.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["INPUT_TOKEN_WEIGHT", "MAX_COUNTERS", "OUTPUT_TOKEN_WEIGHT", "FairQueue", "Queued", "ServiceWindow",
           "jain_index", "weighted_tokens"]

INPUT_TOKEN_WEIGHT = 1.0
OUTPUT_TOKEN_WEIGHT = 2.0  # an output token costs a decode step; VTC's and llm-d's weight
MAX_COUNTERS = 10_000  # tenants remembered while not backlogged; past it the idle ones are forgotten


def weighted_tokens(input_tokens: int, output_tokens: int) -> float:
    return INPUT_TOKEN_WEIGHT * input_tokens + OUTPUT_TOKEN_WEIGHT * output_tokens


def jain_index(shares: list[float]) -> float:
    """Jain's fairness index: 1.0 when all shares are equal, 1/n when one gets everything (and 1.0
    for fewer than two shares, or none served: nobody was treated worse)."""
    total, squares = sum(shares), sum(x * x for x in shares)
    return total * total / (len(shares) * squares) if len(shares) > 1 and squares else 1.0


class ServiceWindow:
    """Weighted tokens served per tenant over the last ``window_s`` seconds, and who wanted more
    (had a request waiting in that time). ``jain(now)``: Jain's index over the served tokens of the
    tenants that wanted more; a tenant that never waited took what it asked for and is left out."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._served: deque[tuple[float, str, float]] = deque()  # (when, tenant, tokens), oldest first
        self._waited: dict[str, float] = {}  # tenant -> last time it had a request waiting

    def served(self, tenant: str, tokens: float, now: float) -> None:
        self._served.append((now, tenant, tokens))
        if len(self._served) > 100_000:
            self._expire(now)

    def waited(self, tenant: str, now: float) -> None:
        self._waited[tenant] = now

    def jain(self, now: float) -> float:
        self._expire(now)
        wanting = {t for t, at in self._waited.items() if at > now - self.window_s}
        shares = dict.fromkeys(wanting, 0.0)
        for _, tenant, tokens in self._served:
            if tenant in shares:
                shares[tenant] += tokens
        return jain_index(list(shares.values()))

    def _expire(self, now: float) -> None:
        while self._served and self._served[0][0] <= now - self.window_s:
            self._served.popleft()
        for tenant in [t for t, at in self._waited.items() if at <= now - self.window_s]:
            del self._waited[tenant]


class Queued(Protocol):
    @property
    def tenant(self) -> str: ...
    @property
    def priority(self) -> int: ...


Q = TypeVar("Q", bound=Queued)


class FairQueue(Generic[Q]):
    def __init__(self) -> None:
        self._bands: dict[int, dict[str, deque[Q]]] = {}  # priority -> tenant -> its items, oldest first
        self._counters: dict[str, float] = {}  # weighted tokens served per tenant
        self._last_served = 0.0  # the counter of the tenant served last
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Q]:
        """Every queued item, bands high to low (not the order they will leave in)."""
        for prio in sorted(self._bands, reverse=True):
            for items in self._bands[prio].values():
                yield from items

    def counter(self, tenant: str) -> float:
        return self._counters.get(tenant, 0.0)

    def lengths(self) -> dict[str, int]:
        """Queued items per tenant."""
        out: dict[str, int] = {}
        for band in self._bands.values():
            for tenant, items in band.items():
                out[tenant] = out.get(tenant, 0) + len(items)
        return out

    def push(self, item: Q) -> None:
        band = self._bands.setdefault(item.priority, {})
        items = band.get(item.tenant)
        if items is None:  # the tenant becomes backlogged in this band: no credit for its idle time
            floor = min((self.counter(t) for t in band), default=self._last_served)
            self._counters[item.tenant] = max(self.counter(item.tenant), floor)
            items = band[item.tenant] = deque()
        items.append(item)
        self._len += 1

    def highest_priority(self) -> int | None:
        """The highest band holding an item (None: empty)."""
        return max(self._bands) if self._bands else None

    def band_heads(self) -> list[Q]:
        """The oldest item of each tenant in the highest band, in the order they would leave."""
        if not self._bands:
            return []
        band = self._bands[max(self._bands)]
        # ties (a tenant just lifted to the lowest counter): the one with fewer waiting goes first
        return [band[t][0] for t in sorted(band, key=lambda t: (self.counter(t), len(band[t])))]

    def peek(self) -> Q | None:
        """The item that leaves next: the highest band's tenant with the lowest counter, its oldest."""
        heads = self.band_heads()
        return heads[0] if heads else None

    def pop(self) -> Q | None:
        item = self.peek()
        if item is not None:
            self.remove(item)
        return item

    def remove(self, item: Q) -> bool:
        """Take out a queued item (it left: answered, expired, cancelled); False if not queued."""
        band = self._bands.get(item.priority)
        items = band.get(item.tenant) if band is not None else None
        if items is None:
            return False
        try:
            items.remove(item)
        except ValueError:
            return False
        self._len -= 1
        if not items:
            del band[item.tenant]  # type: ignore[union-attr]
            if not band:
                del self._bands[item.priority]
        return True

    def charge(self, tenant: str, tokens: float) -> None:
        """Count service given to ``tenant`` (every routed request, queued first or not)."""
        self._last_served = self._counters[tenant] = self.counter(tenant) + tokens
        if len(self._counters) > MAX_COUNTERS:
            self._forget_idle()

    def _forget_idle(self) -> None:
        # A forgotten tenant comes back at the floor, which is all VTC would let it keep anyway
        # unless it had been served more than the others: bounded memory wins over that history.
        backlogged = {t for band in self._bands.values() for t in band}
        self._counters = {t: c for t, c in self._counters.items() if t in backlogged}
