"""Approximate prefix-cache affinity: which endpoint has probably cached this prompt's prefix.

The prompt text is cut into blocks of ``prefix_block_chars`` characters; block i's hash chains the
hash of block i-1 with its text, so one hash names a whole prefix. Each endpoint keeps a bounded
LRU set of the hashes of prompts routed to it (updated on each pick, never by I/O). Score of an
endpoint = matched leading blocks / blocks of the prompt, in [0, 1].

Optional load-aware affinity (``max_load_gap``, llm-d's "prefix affinity with a TTFT penalty"):
an endpoint whose outstanding requests (``Endpoint.load()``: scraped or, newer, the EPP's
completion-tracked in-flight count) exceed the least-loaded endpoint's by more than
``max_load_gap`` gets prefix score 0, so a hot prefix spills over to another replica (which then
caches it too) instead of queueing behind itself. Off by default: on CPU replicas a spill (a
recomputed, evicting prefix) cost more than the queue it avoided (docs/gateway.md).
Invariants: an index never holds more than ``prefix_max_blocks`` hashes (oldest evicted first);
a lookup touches at most one entry per prompt block. The best raw match is left on the request
(``prefix_best_match``) for ``no-hit-lru``.
YAML: ``{type: prefix, weight: 1}`` or ``{type: prefix, weight: 2, parameters: {max_load_gap: 8}}``.
"""

from __future__ import annotations

from collections import OrderedDict

from pydantic import BaseModel, ConfigDict, Field

from inferstack.gateway.datastore import Endpoint
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.scheduling import SchedContext, Scorer, register_scorer
from inferstack.gateway.settings import SchedulerSettings
from inferstack.wire import VllmMetric

__all__ = ["PrefixIndex", "PrefixParams", "PrefixScorer", "block_hashes"]


def block_hashes(text: str, block_chars: int, max_blocks: int = 1 << 30) -> list[int]:
    """Chained hashes of the full blocks of ``text`` (a trailing partial block is ignored)."""
    out: list[int] = []
    prev = 0
    n = min(len(text) // block_chars, max_blocks)
    for i in range(n):
        prev = hash((prev, text[i * block_chars:(i + 1) * block_chars]))
        out.append(prev)
    return out


class PrefixIndex:
    """A bounded LRU set of block hashes for one endpoint."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lru: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, h: int) -> bool:
        return h in self._lru

    def match(self, hashes: list[int]) -> int:
        """How many leading hashes are present."""
        n = 0
        for h in hashes:
            if h not in self._lru:
                break
            n += 1
        return n

    def add(self, hashes: list[int]) -> None:
        lru = self._lru
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
        while len(lru) > self.capacity:
            lru.popitem(last=False)


class PrefixParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_load_gap: float | None = Field(
        default=None, ge=0, description="Outstanding requests above the least-loaded endpoint's beyond "
        "which an endpoint's cache hit no longer counts (null: never).")


@register_scorer
class PrefixScorer(Scorer):
    name = "prefix"
    Params = PrefixParams
    consumes = (VllmMetric.WAITING.value, VllmMetric.RUNNING.value)  # only with max_load_gap

    def __init__(self, params: PrefixParams, scheduler_settings: SchedulerSettings) -> None:  # type: ignore[override]
        super().__init__(params, scheduler_settings)
        self.max_load_gap = params.max_load_gap
        self.block_chars = scheduler_settings.prefix_block_chars
        self.capacity = scheduler_settings.prefix_max_blocks
        self.indexes: dict[str, PrefixIndex] = {}

    def _hashes(self, request: InferenceRequest) -> list[int]:
        if request.prefix_hashes is None:
            # the model is part of the key: different models never share a cache
            request.prefix_hashes = block_hashes(request.target_model + "\0" + request.prompt,
                                                 self.block_chars, self.capacity)
        return request.prefix_hashes

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        hashes = self._hashes(request)
        if not hashes:
            request.prefix_best_match = 0.0
            return [0.0] * len(endpoints)
        total = len(hashes)
        out = []
        for e in endpoints:
            idx = self.indexes.get(e.address)
            out.append(idx.match(hashes) / total if idx is not None else 0.0)
        request.prefix_best_match = max(out, default=0.0)
        gap = self.max_load_gap
        if gap is not None and len(endpoints) > 1:
            loads = [e.load() for e in endpoints]
            least = min(loads)
            out = [0.0 if load - least > gap else s for s, load in zip(out, loads)]
        return out

    def on_pick(self, ctx: SchedContext, request: InferenceRequest, endpoint: Endpoint) -> None:
        hashes = self._hashes(request)
        if hashes:
            idx = self.indexes.get(endpoint.address)
            if idx is None:
                idx = self.indexes[endpoint.address] = PrefixIndex(self.capacity)
            idx.add(hashes)

    def forget(self, address: str) -> None:
        self.indexes.pop(address, None)
