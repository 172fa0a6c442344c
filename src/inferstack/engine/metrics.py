"""Read vLLM's Prometheus ``/metrics`` text.

``parse_series`` keeps chosen metric families as ``{series_key: value}`` (summed over engines;
what the benchmark sampler records); ``parse_figures`` reduces a page to what ``inferstack
status`` shows: requests running/waiting, KV-cache usage and the speculative-decoding counters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ReplicaFigures", "fetch_figures", "parse_figures", "parse_series", "series_key"]


@dataclass(frozen=True)
class ReplicaFigures:
    running: float
    waiting: float
    kv_cache_usage: float  # 0..1
    spec_drafts: float
    spec_draft_tokens: float
    spec_accepted_tokens: float

    @property
    def acceptance_rate(self) -> float | None:
        if self.spec_draft_tokens <= 0:
            return None
        return self.spec_accepted_tokens / self.spec_draft_tokens

    @property
    def mean_acceptance_length(self) -> float | None:
        if self.spec_drafts <= 0:
            return None
        return 1 + self.spec_accepted_tokens / self.spec_drafts

    def as_dict(self) -> dict[str, float | None]:
        out: dict[str, float | None] = dict(asdict(self))
        out["acceptance_rate"] = self.acceptance_rate
        out["mean_acceptance_length"] = self.mean_acceptance_length
        return out


# Sample suffixes worth keeping: counter totals, gauge values, histogram buckets/sum/count.
_KEPT_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "")
_DROPPED_LABELS = frozenset({"engine", "model_name"})


def series_key(name: str, labels: dict[str, str]) -> str:
    kept = {k: v for k, v in labels.items() if k not in _DROPPED_LABELS}
    if not kept:
        return name
    return name + "{" + ",".join(f'{k}="{kept[k]}"' for k in sorted(kept)) + "}"


def parse_series(text: str, families: Iterable[str]) -> dict[str, float]:
    """The series of the given families (counters named without ``_total``) as
    ``{series_key: value}``, summed over engines; ``_created`` timestamps are dropped."""
    wanted = set(families)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        for sample in family.samples:
            if sample.name[len(family.name):] not in _KEPT_SUFFIXES:
                continue
            key = series_key(sample.name, dict(sample.labels))
            out[key] = out.get(key, 0.0) + float(sample.value)
    return out


_FIGURE_FAMILIES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:spec_decode_num_drafts",
    "vllm:spec_decode_num_draft_tokens",
    "vllm:spec_decode_num_accepted_tokens",
)


def parse_figures(text: str) -> ReplicaFigures:
    s = parse_series(text, _FIGURE_FAMILIES)
    return ReplicaFigures(
        running=s.get("vllm:num_requests_running", 0.0),
        waiting=s.get("vllm:num_requests_waiting", 0.0),
        kv_cache_usage=s.get("vllm:kv_cache_usage_perc", s.get("vllm:gpu_cache_usage_perc", 0.0)),
        spec_drafts=s.get("vllm:spec_decode_num_drafts_total", 0.0),
        spec_draft_tokens=s.get("vllm:spec_decode_num_draft_tokens_total", 0.0),
        spec_accepted_tokens=s.get("vllm:spec_decode_num_accepted_tokens_total", 0.0),
    )


def fetch_figures(url: str, timeout_s: float = 2.0) -> ReplicaFigures | None:
    """Figures from ``url``/metrics, or None when the replica does not answer."""
    try:
        response = httpx.get(f"{url}/metrics", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse_figures(response.text)
