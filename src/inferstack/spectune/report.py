"""The tuning report: one self-contained HTML page (recommendation, verdicts, per-load tables with
ratios against no speculation, and the benchmark charts of every measured candidate)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from inferstack.bench.plots import write_charts
from inferstack.bench.report import embed_png
from inferstack.bench.results import load_run
from inferstack.spectune.candidates import TuningPlan
from inferstack.spectune.recommend import LOW_TTFT_P99_MAX, MIN_GAIN, TOP_THROUGHPUT_MIN, Measured, Recommendation

__all__ = ["write_html"]

_COLUMNS = ("load (req/s)", "output tok/s", "vs none", "TTFT P50 ms", "TTFT P99 ms", "vs none",
            "TPOT P50 ms", "vs none", "TPOT P99 ms", "acceptance", "tokens/step", "failed")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}" if v >= 0.1 else f"{v * 1000:.1f}"


def _x(v: float | None, base: float | None) -> str:
    return "-" if v is None or not base else f"{v / base:.2f}x"


def _table(m: Measured, baseline: Measured | None) -> str:
    rows = []
    for i, p in enumerate(m.points):
        b = baseline.points[i] if baseline is not None and i < len(baseline.points) else None
        cells = [f"{p.rate:g}", f"{p.output_tok_s:.1f}", _x(p.output_tok_s, b.output_tok_s if b else None),
                 _ms(p.ttft_p50), _ms(p.ttft_p99), _x(p.ttft_p99, b.ttft_p99 if b else None),
                 _ms(p.tpot_p50), _x(p.tpot_p50, b.tpot_p50 if b else None), _ms(p.tpot_p99),
                 "-" if p.acceptance is None else f"{p.acceptance:.0%}",
                 "-" if p.acceptance_length is None else f"{p.acceptance_length:.2f}", str(p.failures)]
        cls = "" if p.trustworthy else ' class="untrusted"'
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_html(path: Path, measured: Sequence[Measured], rec: Recommendation | None, plan: TuningPlan,
               dataset: str, run_dirs: Sequence[Path], interrupted: bool) -> None:
    baseline = measured[0] if measured and measured[0].points else None
    verdicts = {v.name: v for v in rec.verdicts} if rec else {}
    if rec is None:
        top = "<p class=\"warn\">No recommendation: the baseline (no speculation) was not measured.</p>"
    else:
        top = (f"<p class=\"rec\">Recommended: <b>{html.escape(rec.summary)}</b> &rarr; "
               "<code>recommended.yaml</code> (<code>inferstack up --config recommended.yaml</code>, "
               "<code>inferstack render --spec-from recommended.yaml</code>)</p>")
    if interrupted:
        top += "<p class=\"warn\">Interrupted: only the candidates below were measured.</p>"
    sections = []
    for m in measured:
        v = verdicts.get(m.name)
        if m.name == (baseline.name if baseline else None):
            verdict = "baseline: every ratio is against it"
        elif v is None:
            verdict = m.error or "not judged"
        else:
            verdict = ("eligible: " if v.eligible else "not eligible: ") + "; ".join(v.reasons)
        body = _table(m, baseline) if m.points else ""
        error = f"<pre>{html.escape(m.error)}</pre>" if m.error and not m.points else ""
        sections.append(f"<section><h2>{html.escape(m.name)}: {html.escape(m.description)}</h2>"
                        f"<p>{html.escape(verdict)}</p>{body}{error}</section>")
    charts = ""
    if run_dirs:
        figures = write_charts([load_run(d) for d in run_dirs], path.parent / "charts")
        charts = "<h2>Charts</h2>" + "".join(embed_png(p) for p in figures)
    rules = (f"A config is eligible when, against no speculation at the same load: output tok/s at the "
             f"highest load &ge; {TOP_THROUGHPUT_MIN}x, TTFT P99 at the lowest load &le; {LOW_TTFT_P99_MAX}x, "
             f"no failed request. The eligible config with the lowest TPOT P50 at the lowest load wins if "
             f"it is below {MIN_GAIN}x; otherwise no speculation is recommended.")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>inferstack tune-spec</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}tr.untrusted td"
        "{background:#fde2e2}.warn{color:#a00}.rec{font-size:1.15em}img{max-width:100%}</style></head><body>"
        f"<h1>Speculative decoding tuning</h1>{top}"
        f"<p>Plan: {html.escape(plan.describe())}; dataset {html.escape(dataset)}; one replica measured "
        "directly; every load replays the baseline's linear-sweep rates. Red rows: the load generator "
        "fell behind its schedule or the stage did not complete.</p>"
        f"<p>{rules}</p>" + "".join(sections) + charts + "</body></html>\n")
    path.write_text(page, encoding="utf-8")
