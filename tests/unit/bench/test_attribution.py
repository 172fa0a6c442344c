from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from inferstack.bench.attribution import attribute, histogram_quantile
from inferstack.bench.progress import StageWindow
from inferstack.bench.sampler import read_samples


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.1, 0.0), (0.2, 10.0), (math.inf, 10.0)], 0.15),
        (0.99, [(0.1, 5.0), (0.2, 10.0), (math.inf, 10.0)], 0.198),
        (0.5, [(0.1, 10.0), (math.inf, 10.0)], 0.05),
        (0.99, [(0.1, 1.0), (math.inf, 10.0)], 0.1),  # in the +Inf bucket: the last finite bound
        (0.5, [(0.1, 0.0), (math.inf, 0.0)], None),
        (0.5, [], None),
    ],
)
def test_histogram_quantile(q: float, buckets: list[tuple[float, float]], expected: float | None) -> None:
    got = histogram_quantile(q, buckets)
    assert got == pytest.approx(expected) if expected is not None else got is None


def _fixture(run: Path) -> tuple[list, list[StageWindow]]:  # type: ignore[type-arg]
    windows = [StageWindow.model_validate(w) for w in json.loads((run / "stages.json").read_text())]
    return list(read_samples(run / "server_metrics.jsonl")), windows


@pytest.mark.parametrize("name", ["run-ngram", "run-none"])
def test_server_tokens_per_stage_match_the_clients_count(fixtures_dir: Path, name: str) -> None:
    run = fixtures_dir / name
    records, windows = _fixture(run)
    stages = attribute(records, windows)
    assert [s.stage for s in stages] == [0, 1]
    for s in stages:
        client = json.loads((run / "inference-perf" / f"stage_{s.stage}_lifecycle_metrics.json").read_text())
        ok = client["successes"]
        assert s.counters["generation_tokens"] == ok["output_tokens"]["total"]
        assert s.counters["requests_succeeded"] == ok["count"]
        assert s.histograms["ttft"]["count"] == ok["count"]
        assert s.samples > 0


def test_spec_decode_figures(fixtures_dir: Path) -> None:
    ngram = attribute(*_fixture(fixtures_dir / "run-ngram"))
    for s in ngram:
        c = s.counters
        assert c["spec_drafts"] > 0
        assert s.acceptance_rate == pytest.approx(c["spec_accepted_tokens"] / c["spec_draft_tokens"])
        assert s.mean_acceptance_length == pytest.approx(1 + c["spec_accepted_tokens"] / c["spec_drafts"])
        assert 0.5 < s.acceptance_rate <= 1.0  # copy prompts at temperature 0: n-gram's best case
    none = attribute(*_fixture(fixtures_dir / "run-none"))
    assert all(s.acceptance_rate is None and s.mean_acceptance_length is None for s in none)


def test_stages_do_not_share_tokens_and_open_windows_are_skipped(fixtures_dir: Path) -> None:
    records, windows = _fixture(fixtures_dir / "run-ngram")
    first, second = attribute(records, windows)
    whole = attribute(records, [StageWindow(stage=9, start=windows[0].start, end=windows[1].end, status="completed")])
    assert whole[0].counters["generation_tokens"] == first.counters["generation_tokens"] + second.counters["generation_tokens"]
    still_open = StageWindow(stage=2, start=windows[1].end + 1)
    assert [s.stage for s in attribute(records, [*windows, still_open])] == [0, 1]


def test_counter_reset_never_gives_negative_deltas() -> None:
    recs = [
        {"t": 0.0, "replica": "r", "ok": True, "series": {"vllm:generation_tokens_total": 500.0}},
        {"t": 2.0, "replica": "r", "ok": True, "series": {"vllm:generation_tokens_total": 20.0}},
    ]
    (s,) = attribute(recs, [StageWindow(stage=0, start=0.5, end=1.5, status="completed")])
    assert s.counters["generation_tokens"] == 0.0
    assert s.prefix_cache_hit_rate is None
