"""The recommendation rules on recorded runs (tests/fixtures/bench: one real replica, ngram k=6 vs
none, same data) and on variations of them."""

from dataclasses import replace
from pathlib import Path

import pytest

from inferstack.bench.results import load_run
from inferstack.spectune.recommend import Measured, measured_from_run, recommend

FIXTURES = Path(__file__).parents[2] / "fixtures" / "bench"


@pytest.fixture
def recorded():
    none = measured_from_run("none", "no speculation", {"method": "none"}, load_run(FIXTURES / "run-none"))
    ngram = measured_from_run("ngram-k6", "ngram k=6", {"method": "ngram"}, load_run(FIXTURES / "run-ngram"))
    return none, ngram


def _scaled(m: Measured, name: str, **factors: float) -> Measured:
    """``m`` under another name with some figures of every point multiplied."""
    points = [replace(p, **{k: getattr(p, k) * f for k, f in factors.items()}) for p in m.points]
    return Measured(name, name, {"method": "ngram"}, points)


def test_the_recorded_ngram_run_loses_on_its_first_request_tail(recorded):
    none, ngram = recorded
    rec = recommend(none, [ngram])
    (verdict,) = rec.verdicts
    assert rec.best == "none" and not verdict.eligible
    assert verdict.reasons == ["TTFT P99 at the lowest load 8.67x of none (> 1.2)"]
    assert verdict.ratios["low_tpot_p50"] == pytest.approx(0.477, abs=0.001)
    assert verdict.ratios["top_output_tok_s"] == pytest.approx(1.12, abs=0.01)


def test_without_that_tail_ngram_wins_on_tpot_at_low_load(recorded):
    none, ngram = recorded
    warm = Measured(ngram.name, ngram.description, ngram.section,
                    [replace(ngram.points[0], ttft_p99=none.points[0].ttft_p99), *ngram.points[1:]])
    rec = recommend(none, [warm])
    assert rec.best == "ngram-k6" and rec.verdicts[0].eligible
    assert rec.summary == "ngram-k6: TPOT P50 0.48x of none at the lowest load, output tok/s 1.12x of none at the highest"


def test_throughput_lost_at_saturation_disqualifies_whatever_the_latency(recorded):
    none, ngram = recorded
    slow = _scaled(none, "ngram-k12", output_tok_s=0.75, tpot_p50=0.4)
    rec = recommend(none, [slow])
    assert rec.best == "none"
    assert rec.verdicts[0].reasons == ["output tok/s at the highest load 0.75x of none (< 0.95)"]


def test_the_lowest_low_load_tpot_wins_among_eligible_ones(recorded):
    none, _ = recorded
    a = _scaled(none, "ngram-k4", tpot_p50=0.7)
    b = _scaled(none, "ngram-k8", tpot_p50=0.5, output_tok_s=0.97)
    c = _scaled(none, "ngram-k12", tpot_p50=0.3, output_tok_s=0.9)  # fastest tokens, loses throughput
    rec = recommend(none, [a, b, c])
    assert rec.best == "ngram-k8"
    assert [v.eligible for v in rec.verdicts] == [True, True, False]


def test_a_gain_within_noise_recommends_no_speculation(recorded):
    none, _ = recorded
    rec = recommend(none, [_scaled(none, "ngram-k4", tpot_p50=0.97)])
    assert rec.best == "none" and rec.verdicts[0].eligible
    assert "no config cut TPOT P50 at the lowest load below 0.95x" in rec.summary


def test_failed_or_unfinished_candidates_are_reported_not_chosen(recorded):
    none, ngram = recorded
    broken = Measured("suffix-k8", "suffix", {"method": "suffix"}, error="did not start: no arctic-inference")
    partial = Measured("ngram-k4", "ngram", {}, ngram.points[:1])
    failing = Measured("ngram-k8", "ngram", {}, [replace(p, failures=2) for p in none.points])
    rec = recommend(none, [broken, partial, failing])
    assert rec.best == "none"
    reasons = {v.name: v.reasons for v in rec.verdicts}
    assert reasons["suffix-k8"] == ["did not start: no arctic-inference"]
    assert reasons["ngram-k4"] == ["only 1 of 2 loads measured"]
    assert reasons["ngram-k8"] == ["4 failed requests"]


def test_without_a_baseline_there_is_nothing_to_compare():
    with pytest.raises(ValueError, match="the baseline has no measurements"):
        recommend(Measured("none", "", {}, error="did not start"), [])
