"""Read the live figures of one vLLM replica from its Prometheus ``/metrics`` text.

Only what ``inferstack status`` shows: requests running/waiting, KV-cache usage and the
speculative-decoding counters. Sums over label sets (one engine per replica here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ReplicaFigures", "parse_figures", "fetch_figures"]


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


_WANTED = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:gpu_cache_usage_perc": "kv_cache_usage_fallback",
    "vllm:spec_decode_num_drafts": "spec_drafts",
    "vllm:spec_decode_num_draft_tokens": "spec_draft_tokens",
    "vllm:spec_decode_num_accepted_tokens": "spec_accepted_tokens",
}


def parse_figures(text: str) -> ReplicaFigures:
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            # By sample name: exporters differ on whether a counter's family carries `_total`.
            key = _WANTED.get(sample.name.removesuffix("_total"))
            if key is not None:
                sums[key] = sums.get(key, 0.0) + sample.value
    kv = sums.get("kv_cache_usage", sums.get("kv_cache_usage_fallback", 0.0))
    return ReplicaFigures(
        running=sums.get("running", 0.0),
        waiting=sums.get("waiting", 0.0),
        kv_cache_usage=kv,
        spec_drafts=sums.get("spec_drafts", 0.0),
        spec_draft_tokens=sums.get("spec_draft_tokens", 0.0),
        spec_accepted_tokens=sums.get("spec_accepted_tokens", 0.0),
    )


def fetch_figures(url: str, timeout_s: float = 2.0) -> ReplicaFigures | None:
    """Figures from ``url``/metrics, or None when the replica does not answer."""
    try:
        response = httpx.get(f"{url}/metrics", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse_figures(response.text)
