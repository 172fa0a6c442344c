"""Which speculative config to run: the rules, applied to measured runs (pure, no processes).

Every figure is a ratio against the baseline (``none``) at the same stage of the same tuning run,
so machines 2-3x apart in speed reach the same verdicts. A candidate is *eligible* when
- at the highest load its output tok/s is at least ``TOP_THROUGHPUT_MIN`` x the baseline's
  (speculation must not cost throughput at saturation; the margin absorbs run-to-run noise),
- at the lowest load its TTFT P99 is at most ``LOW_TTFT_P99_MAX`` x the baseline's, and
- every stage completed without failed requests.
Among the eligible ones the lowest TPOT P50 at the lowest load wins (the per-token latency users
feel), if it beats the baseline by ``MIN_GAIN``; otherwise the recommendation is no speculation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inferstack.bench.results import RunResult, StageResult

__all__ = ["LOW_TTFT_P99_MAX", "MIN_GAIN", "TOP_THROUGHPUT_MIN", "Measured", "Point", "Recommendation",
           "Verdict", "measured_from_run", "recommend"]

TOP_THROUGHPUT_MIN = 0.95
LOW_TTFT_P99_MAX = 1.2
MIN_GAIN = 0.95  # low-load TPOT P50 ratio a winner must be under


@dataclass(frozen=True)
class Point:
    """One stage of one candidate (seconds, tokens/s)."""

    rate: float
    output_tok_s: float
    ttft_p50: float | None
    ttft_p99: float | None
    tpot_p50: float | None
    tpot_p99: float | None
    acceptance: float | None  # accepted / draft tokens (server side); None without drafts
    acceptance_length: float | None  # tokens per verification step
    failures: int
    trustworthy: bool


@dataclass
class Measured:
    """A candidate's runs: its points in stage order, or why it has none."""

    name: str
    description: str
    section: dict[str, object]  # its speculative: section
    points: list[Point] = field(default_factory=list)
    error: str | None = None  # did not start / did not finish


@dataclass
class Verdict:
    name: str
    eligible: bool
    reasons: list[str]  # why not eligible, or what it gains
    ratios: dict[str, float | None]  # low_tpot_p50, low_ttft_p99, top_output_tok_s, ...


@dataclass
class Recommendation:
    best: str  # a candidate name; the baseline when nothing pays off
    summary: str
    verdicts: list[Verdict]


def _point(s: StageResult) -> Point:
    server = s.server
    return Point(
        rate=float(s.requested_rate or s.achieved_rate or 0.0),
        output_tok_s=s.output_tokens_per_s,
        ttft_p50=s.ttft.p50, ttft_p99=s.ttft.p99, tpot_p50=s.tpot.p50, tpot_p99=s.tpot.p99,
        acceptance=server.acceptance_rate if server else None,
        acceptance_length=server.mean_acceptance_length if server else None,
        failures=s.failures, trustworthy=s.trustworthy)


def measured_from_run(name: str, description: str, section: dict[str, object], run: RunResult) -> Measured:
    return Measured(name, description, section, [_point(s) for s in run.stages])


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def _fmt(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def recommend(baseline: Measured, others: list[Measured]) -> Recommendation:
    """The verdict on each candidate against ``baseline`` and the winner, with reasons."""
    if baseline.error or not baseline.points:
        raise ValueError(f"the baseline has no measurements ({baseline.error or 'no stages'}): nothing to compare")
    low_b, top_b = baseline.points[0], baseline.points[-1]
    verdicts: list[Verdict] = []
    for m in others:
        if m.error or len(m.points) < len(baseline.points):
            why = m.error or f"only {len(m.points)} of {len(baseline.points)} loads measured"
            verdicts.append(Verdict(m.name, False, [why], {}))
            continue
        low, top = m.points[0], m.points[len(baseline.points) - 1]
        ratios = {
            "low_tpot_p50": _ratio(low.tpot_p50, low_b.tpot_p50),
            "low_ttft_p99": _ratio(low.ttft_p99, low_b.ttft_p99),
            "low_output_tok_s": _ratio(low.output_tok_s, low_b.output_tok_s),
            "top_output_tok_s": _ratio(top.output_tok_s, top_b.output_tok_s),
            "top_ttft_p50": _ratio(top.ttft_p50, top_b.ttft_p50),
        }
        reasons = []
        failures = sum(p.failures for p in m.points)
        if failures:
            reasons.append(f"{failures} failed requests")
        top_tput = ratios["top_output_tok_s"]
        if top_tput is None or top_tput < TOP_THROUGHPUT_MIN:
            reasons.append(f"output tok/s at the highest load {_fmt(top_tput)} of none (< {TOP_THROUGHPUT_MIN})")
        ttft = ratios["low_ttft_p99"]
        if ttft is not None and ttft > LOW_TTFT_P99_MAX:
            reasons.append(f"TTFT P99 at the lowest load {_fmt(ttft)} of none (> {LOW_TTFT_P99_MAX})")
        eligible = not reasons
        if eligible:
            reasons.append(f"TPOT P50 at the lowest load {_fmt(ratios['low_tpot_p50'])} of none, output tok/s "
                           f"at the highest load {_fmt(top_tput)}, TTFT P99 at the lowest load {_fmt(ttft)}")
        verdicts.append(Verdict(m.name, eligible, reasons, ratios))
    winners = sorted((v for v in verdicts if v.eligible and v.ratios["low_tpot_p50"] is not None
                      and v.ratios["low_tpot_p50"] < MIN_GAIN),
                     key=lambda v: (v.ratios["low_tpot_p50"], -(v.ratios["top_output_tok_s"] or 0.0)))
    if winners:
        w = winners[0]
        summary = (f"{w.name}: TPOT P50 {_fmt(w.ratios['low_tpot_p50'])} of none at the lowest load, output "
                   f"tok/s {_fmt(w.ratios['top_output_tok_s'])} of none at the highest")
        return Recommendation(w.name, summary, verdicts)
    if any(v.eligible for v in verdicts):
        why = f"no config cut TPOT P50 at the lowest load below {MIN_GAIN}x of none"
    else:
        why = "every config cost throughput at saturation, tail latency at low load, or failed"
    return Recommendation(baseline.name, f"{baseline.name}: {why}", verdicts)
