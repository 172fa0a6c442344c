"""What one benchmark run asks for: profile, stages, dataset, target (typed, strict).

This is our own small configuration, not inference-perf's: it names the choices a user makes
on the command line (``inferstack bench``) and is turned into an inference-perf config by
:mod:`inferstack.bench.ipconfig`. Invariants: unknown keys are errors; every field has a default
and a description; rates, durations and counts are positive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BenchSettings", "Profile", "SharedPrefixSettings", "SyntheticSettings", "PROFILES"]

Profile = Literal["linear-sweep", "constant", "poisson", "concurrency"]
PROFILES: tuple[str, ...] = ("linear-sweep", "constant", "poisson", "concurrency")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticSettings(_Strict):
    """Synthetic prompts: input/output lengths drawn from normal distributions (tokens)."""

    input_mean: int = Field(default=128, ge=1, description="Mean prompt length in tokens.")
    input_std: int = Field(default=32, ge=0, description="Standard deviation of the prompt length.")
    input_min: int = Field(default=16, ge=1, description="Shortest prompt in tokens.")
    input_max: int = Field(default=512, ge=1, description="Longest prompt in tokens.")
    output_mean: int = Field(default=64, ge=1, description="Mean output length in tokens.")
    output_std: int = Field(default=16, ge=0, description="Standard deviation of the output length.")
    output_min: int = Field(default=8, ge=1, description="Shortest output in tokens.")
    output_max: int = Field(default=256, ge=1, description="Longest output in tokens.")

    @model_validator(mode="after")
    def _bounds(self) -> SyntheticSettings:
        for kind in ("input", "output"):
            lo, mean, hi = (getattr(self, f"{kind}_{k}") for k in ("min", "mean", "max"))
            if not lo <= mean <= hi:
                raise ValueError(
                    f"{kind}_mean ({mean}) must lie within {kind}_min ({lo}) and {kind}_max ({hi})"
                )
        return self


class SharedPrefixSettings(_Strict):
    """Shared-prefix prompts: groups x prompts per group, each group sharing a system prompt."""

    groups: int = Field(default=4, ge=1, description="Number of distinct shared prefixes.")
    prompts_per_group: int = Field(default=8, ge=1, description="Prompts generated per prefix.")
    prefix_len: int = Field(default=256, ge=1, description="Shared prefix length in tokens.")
    question_len: int = Field(default=32, ge=1, description="Per-prompt suffix length in tokens.")
    output_len: int = Field(default=64, ge=1, description="Output length in tokens.")
    seed: int = Field(default=0, description="Seed for reproducible prompts.")


class BenchSettings(_Strict):
    """Everything ``inferstack bench`` needs to write an inference-perf config and run it."""

    profile: Profile = Field(default="linear-sweep", description="Load profile.")
    rate: float | None = Field(
        default=None,
        gt=0,
        description="Highest request rate (QPS) for constant/poisson; stages rise linearly up to it. "
        "For 'concurrency' the highest concurrency level. Ignored by linear-sweep (it probes).",
    )
    rates: tuple[float, ...] = Field(
        default=(),
        description="Explicit stage rates (or concurrency levels), overriding --rate/--stages; "
        "e.g. the rates a linear sweep chose, to replay them against another stack.",
    )
    duration_s: int = Field(default=30, ge=1, description="Duration of each stage in seconds.")
    stages: int = Field(default=7, ge=1, le=50, description="Number of stages.")
    dataset: str = Field(
        default="synthetic", description="'synthetic', 'shared-prefix', 'documents' (shipped copy/summarize "
        "prompts), or a path (ShareGPT JSON / text folder)."
    )
    target: str = Field(description="Base URL of the OpenAI-compatible server (no /v1).")
    model: str | None = Field(default=None, description="Served model name; default: the one the server serves.")
    tokenizer: Path | None = Field(default=None, description="Local tokenizer folder (the served model's).")
    api: Literal["completion", "chat"] = Field(default="completion", description="OpenAI API used.")
    streaming: bool = Field(default=True, description="Stream responses (needed for TTFT/TPOT/ITL).")
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings, description="Synthetic dataset.")
    shared_prefix: SharedPrefixSettings = Field(
        default_factory=SharedPrefixSettings, description="Shared-prefix dataset."
    )
    max_output_tokens: int = Field(default=128, ge=1, description="Output cap for file datasets (tokens).")
    probe_requests: int = Field(
        default=60, ge=2, description="linear-sweep: requests of the saturation probe burst."
    )
    probe_timeout_s: float = Field(default=30.0, gt=0, description="linear-sweep: time limit of the probe.")
    requests_per_stage: int = Field(
        default=0, ge=0, description="concurrency: requests per stage (0 = 4 x concurrency level)."
    )
    num_workers: int = Field(default=1, ge=1, description="inference-perf worker processes.")
    worker_max_concurrency: int = Field(default=64, ge=1, description="In-flight requests per worker.")
    request_timeout_s: float = Field(default=120.0, gt=0, description="Per-request timeout.")
    stage_interval_s: float = Field(default=1.0, ge=0, description="Pause between stages.")
    seed: int = Field(default=1234, description="Base random seed of the load generator.")
    metrics_urls: tuple[str, ...] = Field(
        default=(), description="Replica base URLs whose /metrics are sampled (default: the target)."
    )
    sample_interval_s: float = Field(default=0.5, gt=0, description="Server-metrics sampling period.")
    prometheus_url: str | None = Field(
        default=None, pattern=r"^https?://", description="Also let inference-perf read the server's metrics from "
        "this Prometheus (its metrics.type: prometheus; e.g. the stack's, `up --monitoring`): its own server-side "
        "report per stage beside ours.")
    prometheus_scrape_interval_s: int = Field(default=5, ge=1, description="That Prometheus's scrape interval.")
    progress_period_s: float = Field(default=2.0, gt=0, description="Period of the live progress line.")
    label: str | None = Field(default=None, description="Label of this run in reports.")
    spec_method: str | None = Field(default=None, description="Speculative method of the stack, if known.")
    routing: str | None = Field(default=None, description="Routing policy of the stack, if known.")

    @model_validator(mode="after")
    def _rate_needed(self) -> BenchSettings:
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"rates {list(self.rates)} must all be > 0")
        if self.rates and self.profile == "linear-sweep":
            raise ValueError("explicit rates are for constant/poisson/concurrency; linear-sweep probes its own")
        if self.profile in ("constant", "poisson", "concurrency") and self.rate is None and not self.rates:
            raise ValueError(f"profile '{self.profile}' needs --rate (the highest stage's rate/concurrency)")
        if self.api == "chat" and self.dataset != "shared-prefix":
            raise ValueError(
                f"api 'chat' is only supported with dataset 'shared-prefix' (got '{self.dataset}'); "
                "inference-perf sends synthetic and file prompts as completions"
            )
        return self

    def stage_levels(self) -> list[float]:
        """Rates (or concurrency levels) of the stages we schedule ourselves: linear up to --rate."""
        if self.rates:
            return [float(int(r)) if self.profile == "concurrency" else float(r) for r in self.rates]
        if self.rate is None:
            return []
        n = self.stages
        if self.profile == "concurrency":
            top = max(1, int(round(self.rate)))
            return [float(max(1, round(top * (i + 1) / n))) for i in range(n)]
        return [round(self.rate * (i + 1) / n, 3) for i in range(n)]
