from __future__ import annotations

import json
from pathlib import Path

from inferstack.bench.progress import StageTracker


def test_recorded_log_gives_the_recorded_stage_windows(fixtures_dir: Path) -> None:
    run = fixtures_dir / "run-ngram"
    tracker = StageTracker([1.0, 2.0])
    for line in (run / "inference-perf.log").read_text().splitlines():
        tracker.feed(line)
    got = [w.model_dump() for w in tracker.snapshot()]
    assert got == json.loads((run / "stages.json").read_text())
    assert tracker.current() is None and tracker.errors == 0


def test_sweep_lines_set_planned_rates_and_probe_stage() -> None:
    t = StageTracker()
    t.feed("2026-11-23 04:16:29,000 - inference_perf.loadgen.load_generator - INFO - Stage -1 - run started")
    t.feed("2026-11-23 04:16:36,000 - inference_perf.loadgen.load_generator - INFO - Stage -1 - run completed")
    t.feed("2026-11-23 04:16:36,001 - x - INFO - Generated load stages: [1.0, 2.5, 4.0]")
    w = t.feed("2026-11-23 04:16:37,500 - x - INFO - Stage 1 - run started")
    assert t.total_stages == 3 and w is not None and w.rate == 2.5 and w.status == "running"
    assert t.current() is not None and t.current().stage == 1  # type: ignore[union-attr]
    t.feed("2026-11-23 04:16:39,500 - x - ERROR - boom")
    t.feed("2026-11-23 04:16:40,000 - x - INFO - Stage 1 - run failed")
    probe, one = t.snapshot()
    assert probe.stage == -1 and probe.end is not None and probe.end - probe.start == 7.0
    assert one.status == "failed" and one.end - one.start == 2.5 and t.errors == 1  # type: ignore[operator]
    assert t.feed("not a log line") is None
