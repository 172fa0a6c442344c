"""Read a run directory back: inference-perf's per-stage reports + our server metrics.

A :class:`StageResult` joins, for one stage, inference-perf's ``stage_K_lifecycle_metrics.json``
(client-side: achieved rate, throughput, TTFT/TPOT/ITL/e2e percentiles, schedule delay) with our
``server_metrics_per_stage.json`` entry and the stage's outcome in ``stages.json``.

Invariants: latencies are in seconds; a percentile inference-perf did not report is ``None``;
a stage is *trustworthy* only if it completed and its schedule-delay P99 is below
:data:`SCHEDULE_DELAY_P99_LIMIT_S` (the load generator kept its schedule).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferstack.bench.attribution import StageServerMetrics
from inferstack.bench.manifest import RunManifest, load_manifest
from inferstack.bench.progress import StageWindow
from inferstack.errors import ConfigError

__all__ = ["LatencyStats", "RunResult", "StageResult", "SCHEDULE_DELAY_P99_LIMIT_S", "load_run"]

SCHEDULE_DELAY_P99_LIMIT_S = 0.010
_STAGE_FILE = re.compile(r"^stage_(\d+)_lifecycle_metrics\.json$")


class LatencyStats(BaseModel):
    """Mean and percentiles of one latency (seconds)."""

    model_config = ConfigDict(extra="forbid")

    mean: float | None = Field(default=None, description="Mean.")
    p50: float | None = Field(default=None, description="Median.")
    p90: float | None = Field(default=None, description="90th percentile.")
    p95: float | None = Field(default=None, description="95th percentile.")
    p99: float | None = Field(default=None, description="99th percentile.")

    @classmethod
    def from_summary(cls, d: dict[str, Any] | None) -> LatencyStats:
        if not d:
            return cls()
        return cls(
            mean=d.get("mean"),
            p50=d.get("median", d.get("p50")),
            p90=d.get("p90"),
            p95=d.get("p95"),
            p99=d.get("p99"),
        )


class StageResult(BaseModel):
    """One stage of one run, client and server side."""

    model_config = ConfigDict(extra="forbid")

    stage: int = Field(description="inference-perf stage id (0-based).")
    requested_rate: float | None = Field(description="Planned QPS (or concurrency).")
    achieved_rate: float | None = Field(description="Requests sent / send duration (QPS).")
    requests: int = Field(description="Requests scheduled.")
    successes: int = Field(description="Successful requests.")
    failures: int = Field(description="Failed requests.")
    output_tokens_per_s: float = Field(description="Client-side output throughput.")
    input_tokens_per_s: float = Field(description="Client-side input throughput.")
    requests_per_s: float = Field(description="Completed requests per second.")
    ttft: LatencyStats = Field(description="Time to first token.")
    tpot: LatencyStats = Field(description="Time per output token (per request).")
    itl: LatencyStats = Field(description="Inter-token latency (per token gap).")
    e2e: LatencyStats = Field(description="Request latency.")
    schedule_delay_p99: float | None = Field(description="Load generator's schedule delay P99 (s).")
    status: str = Field(description="completed | failed | running (interrupted) | unknown.")
    trustworthy: bool = Field(description="Completed and schedule delay P99 < 10 ms.")
    server: StageServerMetrics | None = Field(default=None, description="Per-stage server metrics.")


class RunResult(BaseModel):
    """A run directory, read back."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="The run directory.")
    manifest: RunManifest = Field(description="run.json.")
    stages: list[StageResult] = Field(description="Stages in order (a sweep's probe excluded).")

    @property
    def label(self) -> str:
        return self.manifest.label


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read '{path}': {exc}") from exc


def _stage(report: dict[str, Any], stage: int, window: StageWindow | None, server: StageServerMetrics | None) -> StageResult:
    load = report.get("load_summary") or {}
    ok = report.get("successes") or {}
    lat = ok.get("latency") or {}
    thr = ok.get("throughput") or {}
    delay = (load.get("schedule_delay") or {}).get("p99")
    status = window.status if window is not None else "unknown"
    return StageResult(
        stage=stage,
        requested_rate=load.get("requested_rate", window.rate if window else None),
        achieved_rate=load.get("achieved_rate"),
        requests=int(load.get("count", 0)),
        successes=int(ok.get("count", 0)),
        failures=int((report.get("failures") or {}).get("count", 0)),
        output_tokens_per_s=float(thr.get("output_tokens_per_sec", 0.0)),
        input_tokens_per_s=float(thr.get("input_tokens_per_sec", 0.0)),
        requests_per_s=float(thr.get("requests_per_sec", 0.0)),
        ttft=LatencyStats.from_summary(lat.get("time_to_first_token")),
        tpot=LatencyStats.from_summary(lat.get("time_per_output_token")),
        itl=LatencyStats.from_summary(lat.get("inter_token_latency")),
        e2e=LatencyStats.from_summary(lat.get("request_latency")),
        schedule_delay_p99=delay,
        status=status,
        trustworthy=bool(status == "completed" and delay is not None and delay < SCHEDULE_DELAY_P99_LIMIT_S),
        server=server,
    )


def load_run(run_dir: Path) -> RunResult:
    """Read a run directory (run.json, inference-perf reports, stages, server metrics)."""
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    files = manifest.files
    reports_dir = run_dir / files.inference_perf_reports
    windows: dict[int, StageWindow] = {}
    if (run_dir / files.stages).exists():
        for w in _read_json(run_dir / files.stages):
            sw = StageWindow.model_validate(w)
            windows[sw.stage] = sw
    server: dict[int, StageServerMetrics] = {}
    if (run_dir / files.server_per_stage).exists():
        for s in _read_json(run_dir / files.server_per_stage):
            sm = StageServerMetrics.model_validate(s)
            server[sm.stage] = sm
    stages: list[StageResult] = []
    for path in sorted(reports_dir.glob("stage_*_lifecycle_metrics.json")):
        m = _STAGE_FILE.match(path.name)
        if not m:
            continue
        k = int(m.group(1))
        stages.append(_stage(_read_json(path), k, windows.get(k), server.get(k)))
    stages.sort(key=lambda s: s.stage)
    if not stages:
        raise ConfigError(f"run '{run_dir}' has no stage reports in {reports_dir} (status: {manifest.status})")
    return RunResult(path=str(run_dir), manifest=manifest, stages=stages)
