"""Attribute sampled vLLM /metrics to benchmark stages by time.

For each stage window ``[start, end]`` and each replica: a counter's stage value is its value at
the first sample at or after ``end`` minus its value at the last sample at or before ``start``
(the load generator is idle between stages, so the edges are quiet); a gauge is averaged (and
its maximum kept) over all replicas' samples inside the window (a per-replica figure); a histogram's bucket deltas give
server-side percentiles by linear interpolation inside the bucket (as PromQL's
``histogram_quantile`` does). Counters and histograms are summed over replicas; a counter with labels
(``request_success{finished_reason}``) is summed over them. Derived figures:

- spec-decode acceptance rate = accepted tokens / draft tokens;
- mean acceptance length = 1 + accepted tokens / drafts (tokens emitted per verification step);
- prefix-cache hit rate = hits / queries (token based, as vLLM counts them).

Invariant: a figure whose denominator is zero (no drafts, no queries) is ``None``, not 0.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferstack.bench.progress import StageWindow
from inferstack.wire import VllmMetric

__all__ = ["StageServerMetrics", "attribute", "histogram_quantile", "series_value"]

COUNTERS = {
    "generation_tokens": VllmMetric.GENERATION_TOKENS.total,
    "prompt_tokens": VllmMetric.PROMPT_TOKENS.total,
    "requests_succeeded": VllmMetric.REQUEST_SUCCESS.total,
    "preemptions": VllmMetric.PREEMPTIONS.total,
    "prefix_cache_queries": VllmMetric.PREFIX_CACHE_QUERIES.total,
    "prefix_cache_hits": VllmMetric.PREFIX_CACHE_HITS.total,
    "spec_drafts": VllmMetric.SPEC_DRAFTS.total,
    "spec_draft_tokens": VllmMetric.SPEC_DRAFT_TOKENS.total,
    "spec_accepted_tokens": VllmMetric.SPEC_ACCEPTED_TOKENS.total,
}
GAUGES = {
    "running": VllmMetric.RUNNING.value,
    "waiting": VllmMetric.WAITING.value,
    "kv_cache_usage": VllmMetric.KV_CACHE_USAGE.value,
}
HISTOGRAMS = {
    "ttft": VllmMetric.TTFT.value,
    "itl": VllmMetric.ITL.value,
    "e2e": VllmMetric.E2E.value,
    "queue_time": VllmMetric.QUEUE_TIME.value,
}
QUANTILES = (0.5, 0.95, 0.99)
_LE = re.compile(r'le="([^"]+)"')


class StageServerMetrics(BaseModel):
    """Server-side figures of one stage, summed over the sampled replicas."""

    model_config = ConfigDict(extra="forbid")

    stage: int = Field(description="inference-perf stage id.")
    start: float = Field(description="Window start (epoch s).")
    end: float = Field(description="Window end (epoch s).")
    samples: int = Field(description="Successful scrapes inside the window (all replicas).")
    counters: dict[str, float] = Field(description="Counter deltas over the window, by short name.")
    gauges_mean: dict[str, float | None] = Field(description="Mean of each gauge inside the window.")
    gauges_max: dict[str, float | None] = Field(description="Maximum of each gauge inside the window.")
    histograms: dict[str, dict[str, float | None]] = Field(
        description="Server-side latency percentiles (s): {'ttft': {'p50':..,'p95':..,'p99':..,'count':..}}."
    )
    acceptance_rate: float | None = Field(description="accepted / draft tokens; None without drafts.")
    mean_acceptance_length: float | None = Field(description="1 + accepted / drafts; None without drafts.")
    prefix_cache_hit_rate: float | None = Field(description="hits / queries; None without queries.")
    generation_tokens_per_s: float | None = Field(description="Generated tokens / window length.")
    per_replica: dict[str, dict[str, float]] = Field(description="Counter deltas per replica URL.")


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Quantile ``q`` from cumulative ``(upper_bound, count)`` buckets; None when empty."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # beyond the last finite bucket: its bound is all we know
            span = count - prev_count
            if span <= 0:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / span
        prev_bound, prev_count = bound, count
    return ordered[-1][0]


def _edge_values(
    samples: Sequence[dict[str, Any]], start: float, end: float
) -> tuple[dict[str, float], dict[str, float]] | None:
    before = [s for s in samples if s["t"] <= start]
    after = [s for s in samples if s["t"] >= end]
    inside = [s for s in samples if start < s["t"] < end]
    first = before[-1] if before else (inside[0] if inside else None)
    last = after[0] if after else (inside[-1] if inside else None)
    if first is None or last is None:
        return None
    return first["series"], last["series"]


def series_value(series: dict[str, float], name: str) -> float:
    """A series by exact key, else the sum over its label sets (e.g. finished_reason)."""
    if name in series:
        return series[name]
    prefix = name + "{"
    return sum(v for k, v in series.items() if k.startswith(prefix))


def _delta(a: dict[str, float], b: dict[str, float], key: str) -> float:
    # A replica restart resets counters: never report a negative delta.
    return max(0.0, series_value(b, key) - series_value(a, key))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def attribute(records: Iterable[dict[str, Any]], windows: Sequence[StageWindow]) -> list[StageServerMetrics]:
    """Per-stage server metrics from sampler records and stage windows (closed windows only)."""
    by_replica: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        if rec.get("ok"):
            by_replica[rec["replica"]].append(rec)
    for recs in by_replica.values():
        recs.sort(key=lambda r: r["t"])

    out: list[StageServerMetrics] = []
    for w in windows:
        if w.end is None:
            continue
        counters: dict[str, float] = dict.fromkeys(COUNTERS, 0.0)
        per_replica: dict[str, dict[str, float]] = {}
        buckets: dict[str, dict[float, float]] = {h: defaultdict(float) for h in HISTOGRAMS}
        counts: dict[str, float] = dict.fromkeys(HISTOGRAMS, 0.0)
        gauge_vals: dict[str, list[float]] = {g: [] for g in GAUGES}
        n_inside = 0
        for url, recs in by_replica.items():
            edges = _edge_values(recs, w.start, w.end)
            inside = [r for r in recs if w.start <= r["t"] <= w.end]
            n_inside += len(inside)
            for name, metric in GAUGES.items():
                gauge_vals[name].extend(r["series"][metric] for r in inside if metric in r["series"])
            if edges is None:
                continue
            a, b = edges
            mine = {name: _delta(a, b, metric) for name, metric in COUNTERS.items()}
            per_replica[url] = mine
            for name, value in mine.items():
                counters[name] += value
            for name, family in HISTOGRAMS.items():
                counts[name] += _delta(a, b, f"{family}_count")
                for key in b:
                    if key.startswith(f"{family}_bucket"):
                        le = _LE.search(key)
                        if le:
                            buckets[name][float(le.group(1))] += _delta(a, b, key)
        hists: dict[str, dict[str, float | None]] = {}
        for name in HISTOGRAMS:
            pairs = list(buckets[name].items())
            hists[name] = {f"p{int(q * 100)}": histogram_quantile(q, pairs) for q in QUANTILES}
            hists[name]["count"] = counts[name]
        length = w.end - w.start
        out.append(
            StageServerMetrics(
                stage=w.stage,
                start=w.start,
                end=w.end,
                samples=n_inside,
                counters=counters,
                gauges_mean={g: (sum(v) / len(v) if v else None) for g, v in gauge_vals.items()},
                gauges_max={g: (max(v) if v else None) for g, v in gauge_vals.items()},
                histograms=hists,
                acceptance_rate=_ratio(counters["spec_accepted_tokens"], counters["spec_draft_tokens"]),
                mean_acceptance_length=(
                    1 + counters["spec_accepted_tokens"] / counters["spec_drafts"]
                    if counters["spec_drafts"] > 0
                    else None
                ),
                prefix_cache_hit_rate=_ratio(counters["prefix_cache_hits"], counters["prefix_cache_queries"]),
                generation_tokens_per_s=_ratio(counters["generation_tokens"], length),
                per_replica=per_replica,
            )
        )
    return out
