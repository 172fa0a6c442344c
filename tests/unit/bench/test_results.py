from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferstack.bench.results import load_run
from inferstack.errors import ConfigError


def test_recorded_run_reads_back(run_ngram: Path) -> None:
    run = load_run(run_ngram)
    assert run.label == "ngram documents" and run.manifest.spec_method == "ngram"
    assert [s.stage for s in run.stages] == [0, 1]
    raw = json.loads((run_ngram / "inference-perf" / "stage_1_lifecycle_metrics.json").read_text())
    s = run.stages[1]
    assert s.ttft.p50 == raw["successes"]["latency"]["time_to_first_token"]["median"]
    assert s.tpot.p99 == raw["successes"]["latency"]["time_per_output_token"]["p99"]
    assert s.output_tokens_per_s == raw["successes"]["throughput"]["output_tokens_per_sec"]
    assert s.requested_rate == 2.0 and s.successes == 10 and s.failures == 0
    assert s.status == "completed" and s.trustworthy
    assert s.server is not None and s.server.acceptance_rate is not None


def test_late_schedule_or_unfinished_stage_is_not_trustworthy(run_ngram: Path) -> None:
    path = run_ngram / "inference-perf" / "stage_0_lifecycle_metrics.json"
    raw = json.loads(path.read_text())
    raw["load_summary"]["schedule_delay"]["p99"] = 0.010
    path.write_text(json.dumps(raw))
    stages = json.loads((run_ngram / "stages.json").read_text())
    stages[1]["status"] = "failed"
    (run_ngram / "stages.json").write_text(json.dumps(stages))
    run = load_run(run_ngram)
    assert [s.trustworthy for s in run.stages] == [False, False]


def test_not_a_run_dir(tmp_path: Path, run_ngram: Path) -> None:
    with pytest.raises(ConfigError, match="run.json is missing"):
        load_run(tmp_path)
    for p in (run_ngram / "inference-perf").glob("stage_*"):
        p.unlink()
    with pytest.raises(ConfigError, match="no stage reports"):
        load_run(run_ngram)
