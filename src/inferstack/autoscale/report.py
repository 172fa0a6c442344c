"""Charts and a self-contained HTML page for simulator runs (same house style as bench reports:
matplotlib Agg, one PNG per chart, every policy in its own colour, PNGs embedded as data URIs).

Charts: ``replicas.png`` (replicas that exist, solid, and that serve, dotted, with the offered load
on a second axis), ``queue.png`` (waiting requests per ready replica), ``slo.png`` (SLO attainment
of the requests arriving in a trailing 30 s window).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from inferstack.autoscale.simulate import SimResult, SimSettings, Trace  # noqa: E402

__all__ = ["CHARTS", "render_html", "write_charts", "write_report"]

CHARTS = ("replicas.png", "queue.png", "slo.png")
_DPI = 80


def _colors(n: int) -> list[str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def write_charts(results: Sequence[SimResult], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors(len(results))
    paths = []

    fig, ax = plt.subplots(figsize=(10, 4))
    load = ax.twinx()
    if results:
        load.fill_between(results[0].times, results[0].offered_rps, step="post", color="0.85",
                          label="offered req/s")
        load.set_ylabel("offered load (req/s)")
        ax.set_zorder(load.get_zorder() + 1)
        ax.patch.set_visible(False)
    for r, c in zip(results, colors):
        ax.step(r.times, r.replicas, where="post", color=c, label=f"{r.label} (existing)")
        ax.step(r.times, r.ready, where="post", color=c, linestyle=":", label=f"{r.label} (ready)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("replicas")
    ax.set_title("Replicas over time")
    paths.append(_finish(fig, [ax], out_dir / "replicas.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    for r, c in zip(results, colors):
        ax.plot(r.times, r.waiting_per_replica, color=c, label=r.label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("waiting requests per ready replica")
    ax.set_title("Queue")
    paths.append(_finish(fig, [ax], out_dir / "queue.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    for r, c in zip(results, colors):
        att = r.rolling_attainment(30.0)
        ax.plot(r.times, [None if a is None else 100 * a for a in att], color=c,  # type: ignore[arg-type]
                label=f"{r.label} ({100 * r.slo_attainment:.1f}% overall)")
    ax.set_ylim(-2, 102)
    ax.set_xlabel("time of arrival (s)")
    ax.set_ylabel("SLO attainment, trailing 30 s (%)")
    ax.set_title("SLO attainment")
    paths.append(_finish(fig, [ax], out_dir / "slo.png"))
    return paths


def _finish(fig: plt.Figure, axes: Sequence[plt.Axes], path: Path) -> Path:
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(path.stem.replace("_", " "))
    return (f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def render_html(trace: Trace, settings: SimSettings, results: Sequence[SimResult], charts: Sequence[Path]) -> str:
    rows = []
    for r in results:
        duration = len(r.times) * r.step_s
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in (
                r.label, f"{r.replica_seconds:.0f}", f"{r.replica_seconds / duration:.2f}" if duration else "-",
                max(r.replicas, default=0), f"{100 * r.slo_attainment:.1f}%", len(r.scale_events),
            )) + "</tr>"
        )
    head = "".join(f"<th>{c}</th>" for c in ("policy", "replica-seconds", "mean replicas", "peak",
                                             "SLO attainment", "scale events"))
    events = []
    for r in results:
        lines = "".join(f"<li>t={d.at:.0f}s {html.escape(d.message())}</li>" for d in r.scale_events)
        events.append(f"<h3>{html.escape(r.label)}</h3><ul>{lines or '<li>no scaling</li>'}</ul>")
    figures = "".join(_img(p) for p in charts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>inferstack autoscaling simulation</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1300px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}"
        "img{max-width:100%}li{font-family:monospace;font-size:12px}"
        "</style></head><body><h1>inferstack autoscaling simulation</h1>"
        f"<p>Trace <b>{html.escape(trace.name)}</b> ({trace.duration_s:.0f} s). Model: replica ready "
        f"{settings.startup_s:g} s after it is asked for, {settings.capacity_rps:g} req/s per ready replica, "
        f"mean service time {settings.service_s:g} s, SLO = queue wait &le; {settings.slo_wait_s:g} s, "
        f"step {settings.step_s:g} s; the HPA algorithm runs every sync period of the policy "
        "(docs/autoscale.md).</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<h2>Charts</h2>{figures}<h2>Scale events</h2>{''.join(events)}</body></html>\n"
    )


def write_report(trace: Trace, settings: SimSettings, results: Sequence[SimResult], out_dir: Path) -> list[Path]:
    """PNGs and index.html into ``out_dir``; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = write_charts(results, out_dir)
    index = out_dir / "index.html"
    index.write_text(render_html(trace, settings, results, charts), encoding="utf-8")
    return [*charts, index]
