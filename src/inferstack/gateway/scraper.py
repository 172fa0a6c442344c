"""Background scraper of each endpoint's vLLM ``/metrics`` (Prometheus text), every N ms.

Parsing is ``inferstack.engine.metrics.parse_picker_figures`` (the one reader of vLLM pages);
this module maps its figures onto the datastore's ``EndpointMetrics``.

Invariants (the loop's own are in ``endpoint_loops``): a failed scrape (no answer, HTTP error)
drops the endpoint out of the ready set (it comes back on the next success); a page that answers
but cannot be used (not Prometheus text, without the ``vllm:`` series the picker needs, with a
malformed line of one, or larger than ``MAX_PAGE_BYTES``) leaves the endpoint's metrics as they
were, so they age past the staleness bound and the endpoint counts as unknown, never idle;
observers count it as outcome ``parse_error``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from inferstack.engine.metrics import PickerFigures, UnreadablePage, parse_picker_figures
from inferstack.gateway.datastore import Datastore, EndpointMetrics
from inferstack.gateway.endpoint_loops import EndpointLoops, get_bounded

__all__ = ["MAX_PAGE_BYTES", "ScrapeObserver", "Scraper", "endpoint_metrics"]

log = logging.getLogger(__name__)

_TIMEOUTS_BEFORE_DROP = 3

MAX_PAGE_BYTES = 4 * 1024 * 1024  # vLLM's page is ~60 KB (one engine); larger is not a vLLM page


class ScrapeObserver(Protocol):
    """Told the outcome of every scrape ("ok", "error" or "parse_error") and the model names the
    endpoint serves (empty unless the outcome is "ok"); ``EppMetrics`` is one."""

    def observe_scrape(self, address: str, outcome: str, models: frozenset[str]) -> None: ...


def endpoint_metrics(figures: PickerFigures, scraped_at: float) -> EndpointMetrics:
    """The picker's view of one good page."""
    return EndpointMetrics(waiting=figures.waiting, running=figures.running, kv_usage=figures.kv_usage,
                           active_loras=figures.active_loras, waiting_loras=figures.waiting_loras,
                           max_loras=figures.max_loras, block_size=figures.block_size, scraped_at=scraped_at)


class Scraper(EndpointLoops):
    """Keeps one scrape loop per endpoint of the datastore; call ``sync()`` after membership changes.

    ``on_scrape(address, ok)`` is called after every scrape (``ok`` is False for an unusable page
    as well as for a failed request); ``observer`` gets the outcome with its kind and the served
    models.
    """

    what = "scrape"

    def __init__(self, datastore: Datastore, interval_s: float, timeout_s: float,
                 on_scrape: Callable[[str, bool], None] | None = None,
                 observer: ScrapeObserver | None = None) -> None:
        super().__init__(datastore, interval_s, timeout_s, log)
        self._on_scrape = on_scrape
        self._observer = observer

    async def _get(self, url: str) -> bytes | None:
        # the parse runs on the event loop, so a runaway page must not reach it
        return await get_bounded(self._client, url, MAX_PAGE_BYTES)

    async def scrape_once(self, address: str) -> tuple[str, frozenset[str]]:
        """One scrape of ``address``: updates the datastore; returns the outcome ("ok", "error" or
        "parse_error") and the model names the endpoint serves (empty unless "ok")."""
        url = f"http://{address}/metrics"
        try:
            body = await self._get(url)
        except (httpx.HTTPError, OSError) as exc:
            # a refused connection is a dead server; a timeout is often a busy one (vLLM answers
            # /metrics late while prefilling on a loaded CPU): drop it only after a few in a row
            busy = isinstance(exc, httpx.TimeoutException)
            self._ds.mark_failed(address, f"scrape of {url} failed: {exc!r}",
                                 max_failures=_TIMEOUTS_BEFORE_DROP if busy else 1)
            self.log_trouble(address, "error", "endpoint %s: scrape of %s failed: %r", address, url, exc)
            return "error", frozenset()
        if body is None:
            figures: PickerFigures | UnreadablePage = UnreadablePage(f"page larger than {MAX_PAGE_BYTES} bytes")
        else:  # the exposition format is UTF-8; anything else is garbage to the parser, not an exception
            figures = parse_picker_figures(body.decode("utf-8", errors="replace"))
        if isinstance(figures, UnreadablePage):
            self.log_trouble(address, "parse_error",
                             "endpoint %s: /metrics page unusable, its metrics go stale: %s", address, figures.reason)
            return "parse_error", frozenset()
        self._ds.update_metrics(address, endpoint_metrics(figures, time.monotonic()))
        if figures.errors:
            first = figures.errors[0]
            self.log_trouble(address, "malformed lines",
                             "endpoint %s: /metrics has %d malformed lines, skipped (first: line %d: %s)",
                             address, len(figures.errors), first.line, first.reason)
        else:
            self.log_recovered(address, "/metrics usable again")
        return "ok", figures.models

    async def iterate(self, address: str) -> None:
        outcome, models = await self.scrape_once(address)
        if self._observer is not None:
            self._observer.observe_scrape(address, outcome, models)
        if self._on_scrape is not None:
            self._on_scrape(address, outcome == "ok")
