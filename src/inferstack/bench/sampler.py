"""Sample vLLM replicas' /metrics while a benchmark runs (no Prometheus server needed).

A background thread GETs every replica's ``/metrics`` every ``interval_s`` seconds, keeps only
the vLLM series the per-stage attribution uses (:data:`KEPT_METRICS`), and appends one JSON line
per replica and sample to a file: ``{"t": epoch_s, "replica": url, "ok": bool, "series": {key:
value}}``, where ``key`` is ``name{label="v",...}`` with labels sorted (``engine`` and
``model_name`` dropped). To keep the file small, a record may carry ``"delta": true``: its series
holds only the keys that changed since that replica's previous good record; :func:`read_samples`
returns full series again. Invariants: the thread is always joined by
:meth:`MetricsSampler.stop`; a failed scrape, or a page without kept series or with a malformed
line of one (read by :mod:`inferstack.engine.metrics`), is recorded (``ok: false``) and never
stops the sampler; the file is flushed after every sample so an interrupted run keeps it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import httpx

from inferstack.engine.metrics import page_series, parse_text, series_names
from inferstack.wire import VllmMetric

__all__ = ["KEPT_METRICS", "MetricsSampler", "read_samples"]

logger = logging.getLogger(__name__)

# vLLM 0.32 names (counters without the _total suffix; histograms as family names).
KEPT_METRICS: frozenset[str] = frozenset(m.value for m in VllmMetric) - {
    VllmMetric.GPU_CACHE_USAGE.value, VllmMetric.LORA_REQUESTS_INFO.value, VllmMetric.CACHE_CONFIG_INFO.value}
_KEPT_NAMES = series_names(KEPT_METRICS)
class MetricsSampler:
    """Scrapes replicas' /metrics on a background thread into a JSON-lines file."""

    def __init__(
        self,
        replica_urls: Iterable[str],
        out_path: Path,
        interval_s: float = 0.5,
        scrape_timeout_s: float = 2.0,
    ) -> None:
        self.replica_urls = [u.rstrip("/") for u in replica_urls]
        self.out_path = out_path
        self.interval_s = interval_s
        self.scrape_timeout_s = scrape_timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest: dict[str, dict[str, float]] = {}
        self.samples_written = 0
        self._full_every = 60  # a full record now and then bounds the damage of a torn line

    def __enter__(self) -> MetricsSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="bench-metrics-sampler", daemon=True)
        self._thread.start()
        logger.debug("metrics sampler started for %s every %.2fs", self.replica_urls, self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.scrape_timeout_s * len(self.replica_urls) + 5)
            self._thread = None
        logger.debug("metrics sampler stopped after %d samples", self.samples_written)

    def sample_once(self, client: httpx.Client, fh: IO[str]) -> None:
        for url in self.replica_urls:
            t = time.time()
            record: dict[str, Any] = {"t": round(t, 4), "replica": url}
            try:
                resp = client.get(f"{url}/metrics")
                resp.raise_for_status()
                page = parse_text(resp.text, _KEPT_NAMES)
                bad = [e for e in page.errors if e.name]  # a malformed line of a kept series
                if bad or not page.samples:
                    why = f"line {bad[0].line}: {bad[0].reason}" if bad else "no vLLM series on the page"
                    raise ValueError(f"unusable /metrics page: {why}")
                series = page_series(page)
                prev = self.latest.get(url)
                if prev is not None and self.samples_written % self._full_every:
                    changed = {k: v for k, v in series.items() if prev.get(k) != v}
                    record.update(ok=True, delta=True, series=changed)
                else:
                    record.update(ok=True, series=series)
                self.latest[url] = series
            except (httpx.HTTPError, ValueError) as exc:
                record.update(ok=False, error=str(exc) or type(exc).__name__, series={})
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            fh.flush()
            self.samples_written += 1

    def _run(self) -> None:
        with (
            httpx.Client(timeout=self.scrape_timeout_s) as client,
            self.out_path.open("a", encoding="utf-8") as fh,
        ):
            next_at = time.monotonic()
            while True:
                self.sample_once(client, fh)
                if self._stop.is_set():
                    break  # one last sample after stop: the final counters of the run
                next_at += self.interval_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))


def read_samples(path: Path) -> Iterator[dict[str, Any]]:
    """The sampler's records with full series, oldest first; torn lines are skipped."""
    current: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("skipping a torn line in %s", path)
                continue
            if rec.get("ok"):
                url = rec["replica"]
                if rec.pop("delta", False):
                    if url not in current:
                        continue  # a delta without its base (file cut at the start): unusable
                    rec["series"] = {**current[url], **rec["series"]}
                current[url] = rec["series"]
            yield rec
