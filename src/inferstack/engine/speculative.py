"""Speculative decoding settings -> vLLM's ``--speculative-config`` JSON.

One typed model (``SpeculativeSettings``) is shared by the local engine and the Kubernetes
renderer, so both pass vLLM the same JSON. It is validated before any process starts:

- ``ngram``: prompt lookup (no extra weights); ``prompt_lookup_min <= prompt_lookup_max``.
- ``draft``: a smaller draft model (``model`` required; vLLM method ``draft_model``).
- ``eagle`` / ``eagle3``: an EAGLE head trained for the target (``model`` required).
- ``none``: no speculation; ``to_vllm()`` returns ``None`` and no flag is passed.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SPEC_METHODS", "SpecMethod", "SpeculativeSettings"]

SpecMethod = Literal["none", "ngram", "draft", "eagle", "eagle3"]
SPEC_METHODS: tuple[str, ...] = ("none", "ngram", "draft", "eagle", "eagle3")

# Our method names -> vLLM's SpeculativeConfig.method values.
_VLLM_METHOD = {"ngram": "ngram", "draft": "draft_model", "eagle": "eagle", "eagle3": "eagle3"}


class SpeculativeSettings(BaseModel):
    """How a replica speculates. Defaults are tuned for copy-heavy prompts on small CPU models."""

    model_config = ConfigDict(extra="forbid")

    method: SpecMethod = Field("ngram", description="none | ngram | draft | eagle | eagle3")
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
    draft_tensor_parallel_size: int | None = Field(
        None, ge=1, description="draft/eagle: tensor-parallel size of the draft (1 or the target's)."
    )

    @model_validator(mode="after")
    def _check_method_needs(self) -> SpeculativeSettings:
        if self.method in ("draft", "eagle", "eagle3") and not self.model:
            what = "a draft model" if self.method == "draft" else "an EAGLE head"
            raise ValueError(
                f"speculative method '{self.method}' needs {what}: set 'model' "
                f"(CLI: --spec-model PATH_OR_HUB_ID)"
            )
        if self.method == "ngram" and self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError(
                f"prompt_lookup_min ({self.prompt_lookup_min}) cannot exceed "
                f"prompt_lookup_max ({self.prompt_lookup_max})"
            )
        return self

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
        if self.method == "ngram":
            cfg["prompt_lookup_min"] = self.prompt_lookup_min
            cfg["prompt_lookup_max"] = self.prompt_lookup_max
        else:
            cfg["model"] = self.model
            if self.draft_tensor_parallel_size is not None:
                cfg["draft_tensor_parallel_size"] = self.draft_tensor_parallel_size
        return cfg

    def to_vllm_args(self) -> list[str]:
        """``["--speculative-config", JSON]`` or ``[]``."""
        cfg = self.to_vllm()
        return [] if cfg is None else ["--speculative-config", json.dumps(cfg, separators=(",", ":"))]
