"""``run.json``: what a benchmark run was (stack, spec method, routing, versions) and how it ended.

Invariants: written at the start (status ``running``) and rewritten at the end, atomically
(temp file + rename), so a crashed run still says what it was; unknown keys are rejected when
read back, so a renamed field never vanishes silently.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferstack.errors import ConfigError

__all__ = ["RunFiles", "RunManifest", "MANIFEST_NAME", "load_manifest", "save_manifest"]

MANIFEST_NAME = "run.json"


class RunFiles(BaseModel):
    """Names of the files of a run directory (relative to it)."""

    model_config = ConfigDict(extra="forbid")

    inference_perf_config: str = Field(default="inference-perf-config.yaml", description="Config we wrote.")
    inference_perf_reports: str = Field(default="inference-perf", description="inference-perf's report folder.")
    inference_perf_log: str = Field(default="inference-perf.log", description="inference-perf's output.")
    stages: str = Field(default="stages.json", description="Stage windows seen in the log.")
    server_samples: str = Field(default="server_metrics.jsonl", description="Raw /metrics samples.")
    server_per_stage: str = Field(default="server_metrics_per_stage.json", description="Per-stage attribution.")


class RunManifest(BaseModel):
    """The manifest of one run directory."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="Label of the run in reports.")
    status: Literal["running", "completed", "interrupted", "failed"] = Field(description="How the run ended.")
    started_at: float = Field(description="Epoch seconds.")
    finished_at: float | None = Field(default=None, description="Epoch seconds.")
    target: str = Field(description="Base URL the load went to.")
    model: str = Field(description="Served model name requested.")
    tokenizer: str = Field(description="Tokenizer folder used by inference-perf.")
    metrics_urls: list[str] = Field(description="Replicas whose /metrics were sampled.")
    spec_method: str = Field(description="Speculative decoding method ('none', 'ngram', ...; 'unknown').")
    routing: str = Field(description="Routing policy in front of the replicas ('direct' for one replica).")
    profile: str = Field(description="Load profile.")
    dataset: str = Field(description="Dataset name or path.")
    settings: dict[str, Any] = Field(description="The full BenchSettings of the run.")
    versions: dict[str, str | None] = Field(description="inferstack, inference-perf, vLLM versions.")
    stages_finished: int = Field(default=0, description="Stages (excluding a sweep's probe) that completed.")
    return_code: int | None = Field(default=None, description="inference-perf's exit code.")
    files: RunFiles = Field(default_factory=RunFiles, description="File names inside the run directory.")


def save_manifest(manifest: RunManifest, run_dir: Path) -> Path:
    path = run_dir / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_manifest(run_dir: Path) -> RunManifest:
    path = run_dir / MANIFEST_NAME
    try:
        return RunManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"'{run_dir}' is not a benchmark run directory: {MANIFEST_NAME} is missing") from exc
    except ValidationError as exc:
        raise ConfigError(f"'{path}' is not a valid run manifest: {exc}") from exc
