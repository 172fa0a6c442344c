"""Background scraper of each endpoint's vLLM ``/metrics`` (Prometheus text), every N ms.

Parsing is ``inferstack.engine.metrics.parse_picker_figures`` (the one reader of vLLM pages);
this module maps its figures onto the datastore's ``EndpointMetrics``.

Invariants: one task per endpoint, tracked and cancelled on ``stop()``; a failed scrape (no
answer, HTTP error) drops the endpoint out of the ready set (it comes back on the next success); a
page that answers but cannot be used (not Prometheus text, without the ``vllm:`` series the picker
needs, with a malformed line of one, or larger than ``MAX_PAGE_BYTES``) leaves the endpoint's
metrics as they were, so they age past the staleness bound and the endpoint counts as unknown,
never idle; observers count it as outcome ``parse_error``. Either kind of trouble is logged once per
endpoint when it starts and once when it ends, not at every scrape. A scrape task never dies of
one bad iteration: an unexpected exception is logged (once) and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from inferstack.engine.metrics import PickerFigures, UnreadablePage, parse_picker_figures
from inferstack.gateway.datastore import Datastore, EndpointMetrics

__all__ = ["MAX_PAGE_BYTES", "ScrapeObserver", "Scraper", "endpoint_metrics", "get_bounded"]

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



async def get_bounded(client: httpx.AsyncClient, url: str, limit: int) -> bytes | None:
    """GET ``url``'s body, or None when it is larger than ``limit`` bytes (raises for HTTP errors)."""
    async with client.stream("GET", url) as resp:
        resp.raise_for_status()
        chunks, size = [], 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    return b"".join(chunks)


class Scraper:
    """Keeps one scrape loop per endpoint of the datastore; call ``sync()`` after membership changes.

    ``on_scrape(address, ok)`` is called after every scrape (``ok`` is False for an unusable page
    as well as for a failed request); ``observer`` gets the outcome with its kind and the served
    models.
    """

    def __init__(self, datastore: Datastore, interval_s: float, timeout_s: float,
                 on_scrape: Callable[[str, bool], None] | None = None,
                 observer: ScrapeObserver | None = None) -> None:
        self._ds = datastore
        self._interval = interval_s
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._on_scrape = on_scrape
        self._observer = observer
        self._trouble: dict[str, str] = {}  # address -> kind of page/request trouble already logged
        self._broken: set[str] = set()  # addresses whose last iteration raised (already logged)

    def sync(self) -> None:
        addresses = {e.address for e in self._ds.all()}
        for a in list(self._tasks):
            if a not in addresses:
                self._tasks.pop(a).cancel()
                self._trouble.pop(a, None)
                self._broken.discard(a)
        for a in addresses - self._tasks.keys():
            self._tasks[a] = asyncio.create_task(self._loop(a), name=f"scrape {a}")

    def _log_trouble(self, address: str, kind: str, message: str, *args: object) -> None:
        if self._trouble.get(address) != kind:
            self._trouble[address] = kind
            log.warning(message, *args)

    def _log_recovered(self, address: str) -> None:
        kind = self._trouble.pop(address, None)
        if kind is not None:
            log.info("endpoint %s: /metrics usable again (after %s)", address, kind)

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
            self._log_trouble(address, "error", "endpoint %s: scrape of %s failed: %r", address, url, exc)
            return "error", frozenset()
        if body is None:
            figures: PickerFigures | UnreadablePage = UnreadablePage(f"page larger than {MAX_PAGE_BYTES} bytes")
        else:  # the exposition format is UTF-8; anything else is garbage to the parser, not an exception
            figures = parse_picker_figures(body.decode("utf-8", errors="replace"))
        if isinstance(figures, UnreadablePage):
            self._log_trouble(address, "parse_error",
                              "endpoint %s: /metrics page unusable, its metrics go stale: %s", address, figures.reason)
            return "parse_error", frozenset()
        self._ds.update_metrics(address, endpoint_metrics(figures, time.monotonic()))
        if figures.errors:
            first = figures.errors[0]
            self._log_trouble(address, "malformed lines",
                              "endpoint %s: /metrics has %d malformed lines, skipped (first: line %d: %s)",
                              address, len(figures.errors), first.line, first.reason)
        else:
            self._log_recovered(address)
        return "ok", figures.models

    async def _loop(self, address: str) -> None:
        while True:
            started = time.monotonic()
            try:
                outcome, models = await self.scrape_once(address)
                if self._observer is not None:
                    self._observer.observe_scrape(address, outcome, models)
                if self._on_scrape is not None:
                    self._on_scrape(address, outcome == "ok")
            except Exception:  # one bad iteration must not end the endpoint's scraping
                if address not in self._broken:
                    self._broken.add(address)
                    log.exception("endpoint %s: scrape iteration failed; scraping goes on", address)
            else:
                if address in self._broken:
                    self._broken.discard(address)
                    log.info("endpoint %s: scrape iterations complete again", address)
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        await self._client.aclose()
