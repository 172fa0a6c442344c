"""Background scraper of each endpoint's vLLM ``/metrics`` (Prometheus text), every N ms.

Invariants: one task per endpoint, tracked and cancelled on ``stop()``; a failed scrape drops the
endpoint out of the ready set (it comes back on the next success); parsing reads only the few
``vllm:`` series the scheduler needs. Metric names are those of vLLM 0.32: kv_cache_usage_perc,
falling back to gpu_cache_usage_perc of older versions.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from inferstack.gateway.datastore import Datastore, EndpointMetrics

__all__ = ["Scraper", "parse_vllm_metrics"]

log = logging.getLogger(__name__)


def _labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split('",'):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip().strip('"')
    return out


def parse_vllm_metrics(text: str, now: float | None = None) -> EndpointMetrics:
    """Extract queue, running, KV usage, LoRA and cache-config info; summed over label sets."""
    waiting = running = 0.0
    kv: float | None = None
    gpu_kv: float | None = None
    lora_latest = -1.0
    active: frozenset[str] = frozenset()
    waiting_l: frozenset[str] = frozenset()
    max_loras = block_size = 0
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        head, _, value_s = line.rpartition(" ")
        try:
            value = float(value_s)
        except ValueError:
            continue
        name, _, rest = head.partition("{")
        if name == "vllm:num_requests_waiting":
            waiting += value
        elif name == "vllm:num_requests_running":
            running += value
        elif name == "vllm:kv_cache_usage_perc":
            kv = max(kv or 0.0, value)
        elif name == "vllm:gpu_cache_usage_perc":
            gpu_kv = max(gpu_kv or 0.0, value)
        elif name == "vllm:lora_requests_info" and value >= lora_latest:
            lbl = _labels(rest.rstrip("}"))
            lora_latest = value
            active = frozenset(a for a in lbl.get("running_lora_adapters", "").split(",") if a)
            waiting_l = frozenset(a for a in lbl.get("waiting_lora_adapters", "").split(",") if a)
            max_loras = int(lbl.get("max_lora", "0") or 0)
        elif name == "vllm:cache_config_info":
            lbl = _labels(rest.rstrip("}"))
            try:
                block_size = int(lbl.get("block_size", "0"))
            except ValueError:
                block_size = 0
    kv_usage = kv if kv is not None else (gpu_kv if gpu_kv is not None else 0.0)
    return EndpointMetrics(waiting=waiting, running=running, kv_usage=kv_usage, active_loras=active,
                           waiting_loras=waiting_l, max_loras=max_loras, block_size=block_size,
                           scraped_at=time.monotonic() if now is None else now)


class Scraper:
    """Keeps one scrape loop per endpoint of the datastore; call ``sync()`` after membership changes."""

    def __init__(self, datastore: Datastore, interval_s: float, timeout_s: float,
                 on_scrape=None) -> None:  # type: ignore[no-untyped-def]
        self._ds = datastore
        self._interval = interval_s
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._on_scrape = on_scrape  # callback(address, ok: bool) for the EPP's own metrics

    def sync(self) -> None:
        addresses = {e.address for e in self._ds.all()}
        for a in list(self._tasks):
            if a not in addresses:
                self._tasks.pop(a).cancel()
        for a in addresses - self._tasks.keys():
            self._tasks[a] = asyncio.create_task(self._loop(a), name=f"scrape {a}")

    async def _loop(self, address: str) -> None:
        url = f"http://{address}/metrics"
        while True:
            started = time.monotonic()
            try:
                resp = await self._client.get(url)
                resp.raise_for_status()
                self._ds.update_metrics(address, parse_vllm_metrics(resp.text))
                ok = True
            except (httpx.HTTPError, OSError) as exc:
                self._ds.mark_failed(address, f"scrape of {url} failed: {exc!r}")
                ok = False
            if self._on_scrape is not None:
                self._on_scrape(address, ok)
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    async def stop(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        await self._client.aclose()
