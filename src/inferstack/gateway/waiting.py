"""Requests waiting in the picker, answered later on their own ext_proc stream.

Two reasons to wait, one queue: no endpoint is routable yet (scale from zero, ``hold``), or the
pool is saturated (``flow_control``). ``WaitQueue`` keeps them in a ``FairQueue`` (priority bands,
fair turns between tenants, arrival order within a tenant), bounded in number, each with its own
deadline; ``release`` answers them in that order while the director finds the next one room. The
answer at the deadline is the director's (503 when no endpoint was ready, 429 when saturated).
Cancelling a future (the client left, so the transport reset the stream) takes that request out.
Every end is counted (``inferstack_epp_held_requests`` now, ``inferstack_epp_hold_outcomes_total``,
``inferstack_epp_hold_seconds``), and the waiting requests per tenant.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from inferstack.gateway.decision import Decision, Phase
from inferstack.gateway.epp_metrics import EppMetrics
from inferstack.gateway.fair_queue import FairQueue
from inferstack.gateway.request import InferenceRequest

__all__ = ["WaitQueue", "Waiting"]

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class Waiting:
    """One waiting request: what its routing decision needs, and how to answer it."""

    req: InferenceRequest
    phase: Phase
    body: bytes
    request_id: str
    since: float  # monotonic
    future: asyncio.Future[Decision]
    timer: asyncio.TimerHandle | None = None

    @property
    def tenant(self) -> str:
        return self.req.tenant

    @property
    def priority(self) -> int:
        return self.req.priority


class WaitQueue:
    def __init__(self, max_requests: int, metrics: EppMetrics, timed_out: Callable[[Waiting], Decision]) -> None:
        self.max_requests = max_requests
        self.order: FairQueue[Waiting] = FairQueue()
        self._metrics = metrics
        self._timed_out = timed_out  # the answer at the deadline (a JSON 503 or 429 saying why)

    def __len__(self) -> int:
        return len(self.order)

    def add(self, req: InferenceRequest, phase: Phase, body: bytes, request_id: str,
            timeout_s: float) -> asyncio.Future[Decision] | None:
        """Queue a request for at most ``timeout_s``; its future gets the decision. None when full."""
        if len(self.order) >= self.max_requests:
            self._metrics.hold_outcomes.labels("full").inc()
            return None
        loop = asyncio.get_running_loop()
        item = Waiting(req, phase, body, request_id, time.monotonic(), loop.create_future())
        item.timer = loop.call_later(timeout_s, self._expire, item)
        item.future.add_done_callback(lambda f: self._cancelled(item) if f.cancelled() else None)
        self.order.push(item)
        self._metrics.held.set(len(self.order))
        return item.future

    def release(self, decide: Callable[[Waiting], Decision | None]) -> int:
        """Answer waiting requests in the queue's order with ``decide(item)``. None means the item
        has nowhere to go yet: it keeps its place, and the next tenant of the same band is asked
        (one whose requests may use room the first one may not: flow control's reserve); a lower
        band never goes before a higher one."""
        n = 0
        while True:
            for item in self.order.band_heads():
                if item.future.done():  # its client left a moment ago: the cancel callback has not run yet
                    self._end(item, "cancelled")
                    break
                try:
                    answer = decide(item)
                except Exception as exc:  # one bad decision fails that request only (INTERNAL)
                    log.exception("deciding a waiting request failed")
                    self._end(item, "routed")
                    item.future.set_exception(exc)
                    break
                if answer is not None:
                    self._end(item, "routed")
                    item.future.set_result(answer)
                    n += 1
                    break  # the counters moved: ask again from the first
            else:
                return n

    def _end(self, item: Waiting, outcome: str) -> bool:
        """Take ``item`` out, counted by how it ended; False if it had already left."""
        if not self.order.remove(item):
            return False
        if item.timer is not None:
            item.timer.cancel()
        self._metrics.held.set(len(self.order))
        self._metrics.hold_outcomes.labels(outcome).inc()
        self._metrics.hold_seconds.labels(outcome).observe(time.monotonic() - item.since)
        return True

    def _expire(self, item: Waiting) -> None:
        if item.future.done():
            self._end(item, "cancelled")
        elif self._end(item, "timeout"):
            item.future.set_result(self._timed_out(item))

    def _cancelled(self, item: Waiting) -> None:
        self._end(item, "cancelled")
