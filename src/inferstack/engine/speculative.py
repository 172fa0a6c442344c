"""Speculative decoding settings -> vLLM's ``--speculative-config`` JSON.

One typed model (``SpeculativeSettings``) is shared by the local engine and the Kubernetes
renderer, so both pass vLLM the same JSON. It is validated before any process starts:

- ``ngram``: prompt lookup (no extra weights); ``prompt_lookup_min <= prompt_lookup_max``.
- ``suffix``: suffix decoding (arctic-inference's suffix tree over prompts and earlier outputs).
- ``mtp``: the model's own multi-token-prediction layers.
- ``draft``: a smaller draft model (``model`` required; vLLM method ``draft_model``).
- ``eagle`` / ``eagle3``: an EAGLE head trained for the target (``model`` required).
- ``none``: no speculation; ``to_vllm()`` returns ``None`` and no flag is passed.

Load-aware speculation is vLLM's own dynamic schedule, ``num_speculative_tokens_per_batch_size``
(inclusive batch-size ranges -> k, k = 0 drafts nothing; the scheduler looks k up by the number of
requests in each step, ngram/draft/EAGLE honour it). ``off_above_batch: N`` is the short form
"speculate with k while at most N requests share a step, not at all above": at saturation a step
then costs what it costs without speculation, instead of verifying drafts that mostly miss.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SPEC_METHODS", "SpecMethod", "SpeculativeSettings"]

SpecMethod = Literal["none", "ngram", "suffix", "draft", "eagle", "eagle3", "mtp"]
SPEC_METHODS: tuple[str, ...] = ("none", "ngram", "suffix", "draft", "eagle", "eagle3", "mtp")

# Our method names -> vLLM's SpeculativeConfig.method values.
_VLLM_METHOD = {"ngram": "ngram", "suffix": "suffix", "draft": "draft_model", "eagle": "eagle",
                "eagle3": "eagle3", "mtp": "mtp"}
_NEEDS_MODEL = ("draft", "eagle", "eagle3")


class SpeculativeSettings(BaseModel):
    """How a replica speculates. Defaults are tuned for copy-heavy prompts on small CPU models."""

    model_config = ConfigDict(extra="forbid")

    method: SpecMethod = Field("ngram", description="none | ngram | suffix | draft | eagle | eagle3 | mtp")
    num_speculative_tokens: int = Field(
        8, ge=1, le=32, description="Tokens proposed per step (k). Must be >= 1."
    )
    prompt_lookup_min: int = Field(
        2, ge=1, description="ngram: smallest n-gram matched against the context."
    )
    prompt_lookup_max: int = Field(
        5, ge=1, description="ngram: largest n-gram matched against the context."
    )
    model: str | None = Field(
        None,
        description="draft: the draft model; eagle/eagle3: the EAGLE head (local folder or hub id).",
    )
    num_speculative_tokens_per_batch_size: list[tuple[int, int, int]] | None = Field(
        None, description="vLLM's dynamic schedule: [[first, last, k], ...], inclusive batch-size "
        "ranges from 1 up, k <= num_speculative_tokens (0: no drafts); the last k holds above the last range.")
    off_above_batch: int | None = Field(
        None, ge=1, description="Speculate only while at most this many requests run in a step (short "
        "form of num_speculative_tokens_per_batch_size: [[1, N, k], [N+1, N+1, 0]]).")
    draft_tensor_parallel_size: int | None = Field(
        None, ge=1, description="draft/eagle: tensor-parallel size of the draft (1 or the target's)."
    )

    @model_validator(mode="after")
    def _check_method_needs(self) -> SpeculativeSettings:
        if self.method in _NEEDS_MODEL and not self.model:
            what = "a draft model" if self.method == "draft" else "an EAGLE head trained for the target model"
            raise ValueError(
                f"speculative method '{self.method}' needs {what}: set 'model' "
                f"(CLI: --spec-model PATH_OR_HUB_ID); without one, ngram (prompt lookup) needs no extra weights"
            )
        if self.method not in _NEEDS_MODEL and self.model:
            raise ValueError(f"speculative method '{self.method}' takes no 'model' (only draft, eagle, eagle3 do)")
        if self.method == "ngram" and self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError(
                f"prompt_lookup_min ({self.prompt_lookup_min}) cannot exceed "
                f"prompt_lookup_max ({self.prompt_lookup_max})"
            )
        schedule = self.num_speculative_tokens_per_batch_size
        if self.method == "suffix" and (schedule is not None or self.off_above_batch is not None):
            raise ValueError("suffix decoding proposes a fixed k per step in vLLM 0.32: it takes no "
                             "num_speculative_tokens_per_batch_size / off_above_batch (ngram, draft and EAGLE do)")
        if schedule is not None and self.off_above_batch is not None:
            raise ValueError("set num_speculative_tokens_per_batch_size or off_above_batch, not both")
        if schedule is not None:
            _check_schedule(schedule, self.num_speculative_tokens)
        return self

    def batch_schedule(self) -> list[list[int]] | None:
        """The dynamic schedule vLLM gets, or None (k at every batch size)."""
        if self.off_above_batch is not None:
            n = self.off_above_batch
            return [[1, n, self.num_speculative_tokens], [n + 1, n + 1, 0]]
        schedule = self.num_speculative_tokens_per_batch_size
        return None if schedule is None else [list(entry) for entry in schedule]

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def to_vllm(self) -> dict[str, Any] | None:
        """The dict vLLM expects in ``--speculative-config``, or None when speculation is off."""
        if self.method == "none":
            return None
        cfg: dict[str, Any] = {
            "method": _VLLM_METHOD[self.method],
            "num_speculative_tokens": self.num_speculative_tokens,
        }
        schedule = self.batch_schedule()
        if schedule is not None:
            cfg["num_speculative_tokens_per_batch_size"] = schedule
        if self.method == "ngram":
            cfg["prompt_lookup_min"] = self.prompt_lookup_min
            cfg["prompt_lookup_max"] = self.prompt_lookup_max
        elif self.method in _NEEDS_MODEL:
            cfg["model"] = self.model
            if self.draft_tensor_parallel_size is not None:
                cfg["draft_tensor_parallel_size"] = self.draft_tensor_parallel_size
        return cfg

    def to_vllm_args(self) -> list[str]:
        """``["--speculative-config", JSON]`` or ``[]``."""
        cfg = self.to_vllm()
        return [] if cfg is None else ["--speculative-config", json.dumps(cfg, separators=(",", ":"))]


def _check_schedule(schedule: list[tuple[int, int, int]], k: int) -> None:
    """vLLM's own rules (v1/spec_decode/dynamic/utils.py), checked before any process starts."""
    if not schedule:
        raise ValueError("num_speculative_tokens_per_batch_size must not be empty")
    previous_end = 0
    for first, last, tokens in sorted(schedule):
        if first < 1 or first > last:
            raise ValueError(f"num_speculative_tokens_per_batch_size: range [{first}, {last}] must satisfy "
                             "1 <= first <= last")
        if not 0 <= tokens <= k:
            raise ValueError(f"num_speculative_tokens_per_batch_size: k {tokens} for [{first}, {last}] must be "
                             f"0..num_speculative_tokens ({k})")
        if first <= previous_end:
            raise ValueError("num_speculative_tokens_per_batch_size: ranges overlap")
        previous_end = last
    if min(schedule)[0] != 1:
        raise ValueError("num_speculative_tokens_per_batch_size: the first range must start at batch size 1")
