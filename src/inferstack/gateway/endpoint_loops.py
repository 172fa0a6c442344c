"""One background loop per endpoint of the datastore: what the ``/metrics`` scraper and the
``/v1/models`` poller share.

Invariants: one task per endpoint, started by ``sync()`` for each new address, cancelled for each
gone one and by ``stop()``; a loop runs ``iterate(address)`` at once, then every interval (counted
from the start of the previous run) or as soon as it is ``poke``d; a loop never dies of one bad
iteration: an unexpected exception is logged once, its end once, and the loop goes on. Trouble of a
kind (a failed request, an unusable page) is logged once per endpoint when it starts and once when
it ends, not at every run.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from inferstack.gateway.datastore import Datastore

__all__ = ["EndpointLoops", "get_bounded"]


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


class EndpointLoops:
    """Base of the per-endpoint loops: subclasses define ``iterate`` (one run for one endpoint,
    observers told) and say what they do (``what``, in task names and log lines)."""

    what = "poll"

    def __init__(self, datastore: Datastore, interval_s: float, timeout_s: float, logger: logging.Logger) -> None:
        self._ds = datastore
        self._interval = interval_s
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._log = logger
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._trouble: dict[str, str] = {}  # address -> kind of trouble already logged
        self._broken: set[str] = set()  # addresses whose last iteration raised (already logged)

    async def iterate(self, address: str) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Follow the datastore's membership: a loop for each new endpoint, none for gone ones."""
        addresses = {e.address for e in self._ds.all()}
        for a in list(self._tasks):
            if a not in addresses:
                self._tasks.pop(a).cancel()
                self._wake.pop(a, None)
                self._trouble.pop(a, None)
                self._broken.discard(a)
        for a in addresses - self._tasks.keys():
            self._wake[a] = asyncio.Event()
            self._tasks[a] = asyncio.create_task(self._loop(a), name=f"{self.what} {a}")

    def poke(self, address: str) -> None:
        """Run ``address``'s loop now instead of at the end of its interval."""
        wake = self._wake.get(address)
        if wake is not None:
            wake.set()

    def log_trouble(self, address: str, kind: str, message: str, *args: object) -> None:
        if self._trouble.get(address) != kind:
            self._trouble[address] = kind
            self._log.warning(message, *args)

    def log_recovered(self, address: str, message: str) -> None:
        """Log ``message`` (with the address and the trouble's kind) if ``address`` had trouble."""
        kind = self._trouble.pop(address, None)
        if kind is not None:
            self._log.info("endpoint %s: %s (after %s)", address, message, kind)

    async def _loop(self, address: str) -> None:
        wake = self._wake[address]
        while True:
            started = time.monotonic()
            wake.clear()
            try:
                await self.iterate(address)
            except Exception:  # one bad iteration must not end the endpoint's loop
                if address not in self._broken:
                    self._broken.add(address)
                    self._log.exception("endpoint %s: %s iteration failed; %s goes on", address, self.what, self.what)
            else:
                if address in self._broken:
                    self._broken.discard(address)
                    self._log.info("endpoint %s: %s iterations complete again", address, self.what)
            try:
                await asyncio.wait_for(wake.wait(), max(0.0, self._interval - (time.monotonic() - started)))
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._wake.clear()
        await self._client.aclose()
