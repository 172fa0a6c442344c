"""Our :class:`BenchSettings` -> an inference-perf 0.7 config mapping (written as YAML).

Profiles map onto inference-perf's load section:

- ``linear-sweep``: ``load.sweep`` of type ``linear`` (a saturation probe burst, then N stages
  from 1 QPS rising linearly to the estimated saturation), constant arrivals;
- ``constant`` / ``poisson``: N stages of ``duration`` seconds at rates rising linearly to
  ``--rate`` (a single stage when N is 1);
- ``concurrency``: ``load.type: concurrent``; N stages at concurrency levels rising to ``--rate``.

Invariants: streaming is on unless asked otherwise; the tokenizer is the served model's local
folder; reports are per stage with the percentiles our report needs; inference-perf's own
Prometheus client stays off (we sample vLLM's /metrics ourselves) unless ``prometheus_url`` names a
Prometheus to read (the stack's, with monitoring on): then it also reports server metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from inferstack.bench.datasets import data_section
from inferstack.bench.settings import BenchSettings

__all__ = ["PERCENTILES", "build_config", "write_config", "REPORTS_SUBDIR"]

PERCENTILES = [50, 90, 95, 99]
REPORTS_SUBDIR = "inference-perf"


def _load_section(settings: BenchSettings) -> dict[str, Any]:
    load: dict[str, Any] = {
        "interval": settings.stage_interval_s,
        "num_workers": settings.num_workers,
        "worker_max_concurrency": settings.worker_max_concurrency,
        "request_timeout": settings.request_timeout_s,
        "base_seed": settings.seed,
        # In-flight requests of a stage may finish within this grace; keeps teardown bounded.
        "stage_teardown_grace_seconds": max(10.0, settings.request_timeout_s / 2),
    }
    if settings.profile == "linear-sweep":
        load["type"] = "constant"
        load["sweep"] = {
            "type": "linear",
            "num_requests": settings.probe_requests,
            "timeout": settings.probe_timeout_s,
            "num_stages": settings.stages,
            "stage_duration": settings.duration_s,
        }
    elif settings.profile == "concurrency":
        load["type"] = "concurrent"
        load["stages"] = [
            {
                "concurrency_level": int(level),
                "num_requests": settings.requests_per_stage or 4 * int(level),
            }
            for level in settings.stage_levels()
        ]
    else:
        load["type"] = settings.profile
        load["stages"] = [{"rate": rate, "duration": settings.duration_s} for rate in settings.stage_levels()]
    return load


def build_config(settings: BenchSettings, run_dir: Path, model: str, tokenizer: Path) -> dict[str, Any]:
    """The inference-perf config for this run; may write a converted dataset into ``run_dir``."""
    prometheus = settings.prometheus_url is not None
    metrics = {"metrics": {"type": "prometheus", "prometheus": {
        "url": settings.prometheus_url, "scrape_interval": settings.prometheus_scrape_interval_s}}} if prometheus else {}
    return {
        "api": {"type": settings.api, "streaming": settings.streaming},
        "data": data_section(settings, run_dir),
        "load": _load_section(settings),
        "server": {
            "type": "vllm",
            "model_name": model,
            "base_url": settings.target.rstrip("/"),
            "ignore_eos": True,
        },
        "tokenizer": {"pretrained_model_name_or_path": str(tokenizer)},
        "report": {
            "request_lifecycle": {
                "summary": True,
                "per_stage": True,
                "per_request": False,
                "percentiles": PERCENTILES,
            },
            "prometheus": {"summary": prometheus, "per_stage": prometheus},
        },
        **metrics,
        "storage": {"local_storage": {"path": str((run_dir / REPORTS_SUBDIR).resolve())}},
    }


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
