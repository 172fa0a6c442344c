"""Reports of benchmark runs: Markdown summary, self-contained HTML page, side-by-side compare.

``write_report(runs, out)`` writes the PNG charts (:mod:`inferstack.bench.plots`), an
``index.html`` that embeds them (data URIs, so the page alone is the report) plus one table per
run, and ``summary.md``; it returns the Markdown, which the CLI prints. ``compare_runs(a, b)``
returns per-stage ratios B/A as Markdown (stages matched by index).

Invariants: every stage that is not trustworthy (schedule delay P99 >= 10 ms, or not completed)
is flagged in every table (``NO`` in the *trusted* column and a note); latencies are printed in
milliseconds; a missing figure prints as ``-``.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from inferstack.bench.plots import write_charts
from inferstack.bench.results import SCHEDULE_DELAY_P99_LIMIT_S, RunResult, StageResult, load_run

__all__ = ["compare_runs", "embed_png", "markdown_summary", "render_html", "write_report"]

_COLUMNS = (
    "stage",
    "rate",
    "QPS",
    "ok/fail",
    "out tok/s",
    "TTFT P50",
    "TTFT P99",
    "TPOT P50",
    "TPOT P99",
    "e2e P99",
    "accept",
    "accept len",
    "prefix hit",
    "sched P99",
    "trusted",
)


def _f(v: float | None, fmt: str = "{:.1f}", scale: float = 1.0) -> str:
    return "-" if v is None else fmt.format(v * scale)


def _row(s: StageResult) -> list[str]:
    srv = s.server
    return [
        str(s.stage),
        _f(s.requested_rate, "{:g}"),
        _f(s.achieved_rate, "{:.2f}"),
        f"{s.successes}/{s.failures}",
        _f(s.output_tokens_per_s),
        _f(s.ttft.p50, scale=1000),
        _f(s.ttft.p99, scale=1000),
        _f(s.tpot.p50, scale=1000),
        _f(s.tpot.p99, scale=1000),
        _f(s.e2e.p99, scale=1000),
        _f(srv.acceptance_rate if srv else None, "{:.1%}"),
        _f(srv.mean_acceptance_length if srv else None, "{:.2f}"),
        _f(srv.prefix_cache_hit_rate if srv else None, "{:.1%}"),
        _f(s.schedule_delay_p99, "{:.2f}", 1000),
        "yes" if s.trustworthy else "NO",
    ]


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _untrusted_note(run: RunResult) -> str:
    bad = [s for s in run.stages if not s.trustworthy]
    if not bad:
        return ""
    why = ", ".join(
        f"{s.stage} ({'not completed: ' + s.status if s.status != 'completed' else 'schedule delay P99 ' + _f(s.schedule_delay_p99, '{:.1f}', 1000) + ' ms'})"
        for s in bad
    )
    limit = SCHEDULE_DELAY_P99_LIMIT_S * 1000
    return f"\nNot trustworthy (load generator missed its schedule, P99 >= {limit:g} ms, or stage unfinished): {why}\n"


def _run_heading(run: RunResult) -> str:
    m = run.manifest
    return (
        f"## {m.label}\n\n{m.profile} on {m.target} · model {m.model} · spec {m.spec_method} · "
        f"routing {m.routing} · dataset {m.dataset} · status {m.status}\n"
    )


def markdown_summary(runs: Sequence[RunResult]) -> str:
    """One table per run: rates, throughput, latency percentiles (ms), spec/prefix figures."""
    parts = ["# Benchmark summary\n", "Latencies in ms; QPS = achieved request rate.\n"]
    for run in runs:
        parts.append(_run_heading(run))
        parts.append(_md_table(_COLUMNS, [_row(s) for s in run.stages]))
        parts.append(_untrusted_note(run))
    return "\n".join(parts).rstrip() + "\n"


def embed_png(path: Path) -> str:
    """A <figure> with the PNG inlined (pages stay one self-contained file)."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(path.stem.replace("_", " "))
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{html.escape(path.name)}</figcaption></figure>'


def _html_table(run: RunResult) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _COLUMNS)
    rows = []
    for s in run.stages:
        cls = "" if s.trustworthy else ' class="untrusted"'
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in _row(s)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render_html(runs: Sequence[RunResult], charts: Sequence[Path]) -> str:
    """A self-contained page: run descriptions, per-stage tables, embedded charts."""
    sections = []
    for run in runs:
        m = run.manifest
        note = _untrusted_note(run).strip()
        sections.append(
            f"<section><h2>{html.escape(m.label)}</h2>"
            f"<p>{html.escape(m.profile)} on {html.escape(m.target)} · model {html.escape(m.model)} · "
            f"spec {html.escape(m.spec_method)} · routing {html.escape(m.routing)} · dataset "
            f"{html.escape(m.dataset)} · status {html.escape(m.status)} · vLLM {html.escape(str(m.versions.get('vllm')))}</p>"
            f"{_html_table(run)}"
            + (f'<p class="warn">{html.escape(note)}</p>' if note else "")
            + "</section>"
        )
    figures = "".join(embed_png(p) for p in charts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>inferstack benchmark report</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1300px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "tr.untrusted td{background:#fde2e2}.warn{color:#a00}img{max-width:100%}"
        "</style></head><body><h1>inferstack benchmark report</h1>"
        "<p>Latencies in ms; QPS is the achieved request rate; hollow markers and red rows are stages "
        "whose load-generator schedule delay P99 was &ge; 10 ms or that did not complete.</p>"
        + "".join(sections)
        + f"<h2>Charts</h2>{figures}</body></html>\n"
    )


def write_report(run_dirs: Sequence[Path], out_dir: Path) -> str:
    """Write charts, index.html and summary.md for ``run_dirs`` into ``out_dir``; return the Markdown."""
    runs = [load_run(Path(d)) for d in run_dirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(runs, out_dir)
    (out_dir / "index.html").write_text(render_html(runs, charts), encoding="utf-8")
    summary = markdown_summary(runs)
    (out_dir / "summary.md").write_text(summary, encoding="utf-8")
    return summary


def _ratio(b: float | None, a: float | None) -> str:
    if a is None or b is None or a == 0:
        return "-"
    return f"{b / a:.2f}x"


def compare_runs(run_a: Path, run_b: Path) -> str:
    """Per-stage ratios B/A (throughput, latency percentiles) and both runs' acceptance rates."""
    a, b = load_run(run_a), load_run(run_b)
    header = (
        "stage",
        "QPS A/B",
        "out tok/s B/A",
        "TTFT P50 B/A",
        "TTFT P99 B/A",
        "TPOT P50 B/A",
        "TPOT P99 B/A",
        "e2e P99 B/A",
        "accept A/B",
        "trusted A/B",
    )
    rows = []
    for sa, sb in zip(a.stages, b.stages, strict=False):
        acc_a = sa.server.acceptance_rate if sa.server else None
        acc_b = sb.server.acceptance_rate if sb.server else None
        rows.append(
            [
                str(sa.stage),
                f"{_f(sa.achieved_rate, '{:.2f}')}/{_f(sb.achieved_rate, '{:.2f}')}",
                _ratio(sb.output_tokens_per_s, sa.output_tokens_per_s),
                _ratio(sb.ttft.p50, sa.ttft.p50),
                _ratio(sb.ttft.p99, sa.ttft.p99),
                _ratio(sb.tpot.p50, sa.tpot.p50),
                _ratio(sb.tpot.p99, sa.tpot.p99),
                _ratio(sb.e2e.p99, sa.e2e.p99),
                f"{_f(acc_a, '{:.1%}')}/{_f(acc_b, '{:.1%}')}",
                f"{'yes' if sa.trustworthy else 'NO'}/{'yes' if sb.trustworthy else 'NO'}",
            ]
        )
    out = [
        f"# Compare: A = {a.label} ({a.path}), B = {b.label} ({b.path})\n",
        "Ratios are B/A: below 1x means B is faster for latencies, above 1x means B has more throughput.\n",
        _md_table(header, rows),
    ]
    if len(a.stages) != len(b.stages):
        out.append(f"\nStage counts differ (A {len(a.stages)}, B {len(b.stages)}); compared the first {len(rows)}.")
    return "\n".join(out) + "\n"
