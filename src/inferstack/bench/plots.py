"""PNG charts of one or more runs (matplotlib, Agg backend, no display needed).

Charts (one file each, every run overlaid in its own colour, labelled by the run's label):

- ``throughput_vs_ttft.png`` / ``throughput_vs_tpot.png``: output tok/s (x) vs TTFT / TPOT (y)
  at P50 (solid), P95 (dashed), P99 (dotted);
- ``latency_vs_qps.png``: TTFT, TPOT and e2e latency P50/P95/P99 vs achieved QPS;
- ``spec_acceptance_vs_qps.png``: acceptance rate and mean acceptance length vs achieved QPS;
- ``prefix_hit_rate_vs_qps.png``: prefix-cache hit rate vs achieved QPS.

Invariant: stages that are not trustworthy (schedule delay P99 >= 10 ms or unfinished) are
drawn with hollow markers, so a curve never hides them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.axes import Axes  # noqa: E402

from inferstack.bench.results import RunResult, StageResult  # noqa: E402

__all__ = ["CHARTS", "write_charts"]

CHARTS = (
    "throughput_vs_ttft.png",
    "throughput_vs_tpot.png",
    "latency_vs_qps.png",
    "spec_acceptance_vs_qps.png",
    "prefix_hit_rate_vs_qps.png",
)
_PCTS = (("p50", "-", "P50"), ("p95", "--", "P95"), ("p99", ":", "P99"))
_DPI = 80


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000.0


def _percentile_ms(metric: str, key: str) -> Callable[[StageResult], float | None]:
    """Reads e.g. ``stage.ttft.p99`` in milliseconds."""
    return lambda s: _ms(getattr(getattr(s, metric), key))


def _series(
    ax: Axes,
    stages: Sequence[StageResult],
    x: Callable[[StageResult], float | None],
    y: Callable[[StageResult], float | None],
    color: str,
    style: str,
    label: str,
) -> bool:
    pts: list[tuple[float, float, bool]] = []
    for s in stages:
        a, b = x(s), y(s)
        if a is not None and b is not None:
            pts.append((a, b, s.trustworthy))
    if not pts:
        return False
    ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=style, color=color, label=label)
    for a, b, trusted in pts:
        ax.plot([a], [b], marker="o", color=color, markerfacecolor=color if trusted else "none")
    return True


def _finish(fig: plt.Figure, axes: Sequence[Axes], path: Path) -> None:
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def _colors(n: int) -> list[str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def _qps(s: StageResult) -> float | None:
    return s.achieved_rate


def _throughput_vs(runs: Sequence[RunResult], metric: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        for key, style, name in _PCTS:
            _series(
                ax,
                run.stages,
                lambda s: s.output_tokens_per_s,
                _percentile_ms(metric, key),
                color,
                style,
                f"{run.label} {name}",
            )
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel(f"{title} (ms)")
    ax.set_title(f"Throughput vs {title}")
    _finish(fig, [ax], path)


def _latency_vs_qps(runs: Sequence[RunResult], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, metric, title in zip(axes, ("ttft", "tpot", "e2e"), ("TTFT", "TPOT", "e2e latency"), strict=True):
        for run, color in zip(runs, _colors(len(runs)), strict=True):
            for key, style, name in _PCTS:
                _series(ax, run.stages, _qps, _percentile_ms(metric, key),
                        color, style, f"{run.label} {name}")
        ax.set_xlabel("achieved QPS")
        ax.set_ylabel(f"{title} (ms)")
        ax.set_title(f"{title} vs QPS")
    _finish(fig, list(axes), path)


def _spec_vs_qps(runs: Sequence[RunResult], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        _series(axes[0], run.stages, _qps, lambda s: s.server.acceptance_rate if s.server else None,
                color, "-", run.label)
        _series(axes[1], run.stages, _qps, lambda s: s.server.mean_acceptance_length if s.server else None,
                color, "-", run.label)
    axes[0].set_ylabel("acceptance rate (accepted / draft tokens)")
    axes[1].set_ylabel("mean acceptance length (1 + accepted / drafts)")
    for ax in axes:
        ax.set_xlabel("achieved QPS")
    axes[0].set_title("Spec-decode acceptance vs QPS")
    _finish(fig, list(axes), path)


def _prefix_vs_qps(runs: Sequence[RunResult], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for run, color in zip(runs, _colors(len(runs)), strict=True):
        _series(ax, run.stages, _qps, lambda s: s.server.prefix_cache_hit_rate if s.server else None,
                color, "-", run.label)
    ax.set_xlabel("achieved QPS")
    ax.set_ylabel("prefix-cache hit rate")
    ax.set_title("Prefix-cache hit rate vs QPS")
    _finish(fig, [ax], path)


def write_charts(runs: Sequence[RunResult], out_dir: Path) -> list[Path]:
    """Write every chart of :data:`CHARTS` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in CHARTS]
    _throughput_vs(runs, "ttft", "TTFT", paths[0])
    _throughput_vs(runs, "tpot", "TPOT", paths[1])
    _latency_vs_qps(runs, paths[2])
    _spec_vs_qps(runs, paths[3])
    _prefix_vs_qps(runs, paths[4])
    return paths
