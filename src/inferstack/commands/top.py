"""``inferstack top``: the running stack at a glance, refreshed every second, without Prometheus.

``sample`` reads what is live (each replica's /metrics, the picker's /metrics) into a typed
``TopSample``; ``render`` (pure: the two samples and their times passed in) turns two samples into
the screen: per replica its state, running and waiting requests, KV use, output tok/s and
speculative acceptance; the picker's waiting requests and decisions per second by outcome.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

from inferstack.engine.metrics import ReplicaFigures, fetch_figures, parse_text
from inferstack.gateway import HELD_REQUESTS_METRIC, REQUESTS_METRIC, epp_metrics_pages
from inferstack.errors import InferstackError
from inferstack.stack.state import StateFile
from inferstack.stack.status import StackStatus

__all__ = ["ReplicaRow", "TopSample", "register", "render", "sample"]


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    name: str
    state: str
    figures: ReplicaFigures | None  # None: not ready, or its /metrics did not answer


@dataclass(frozen=True, slots=True)
class TopSample:
    at: float  # monotonic seconds
    ready: int
    desired: int
    replicas: tuple[ReplicaRow, ...]
    picker_waiting: float | None = None  # None: no gateway, or its picker did not answer
    decisions: dict[str, float] = field(default_factory=dict)  # outcome -> count since the picker started


def sample(status: StackStatus, at: float, timeout_s: float = 0.5) -> TopSample:
    rows = tuple(ReplicaRow(r.name, r.state, fetch_figures(r.url, timeout_s) if r.state == "ready" else None)
                 for r in status.replicas)
    waiting: float | None = None
    decisions: dict[str, float] = {}
    pages = epp_metrics_pages(status.gateway, timeout_s) if status.gateway is not None else []
    if pages:  # each picker counts its own: summed
        waiting = 0.0
        names = (HELD_REQUESTS_METRIC, REQUESTS_METRIC + "_total")
        for s in (s for page in pages for s in parse_text(page, names).samples):
            if s.name == HELD_REQUESTS_METRIC:
                waiting += s.value
            else:
                outcome = s.labels.get("outcome", "")
                decisions[outcome] = decisions.get(outcome, 0.0) + s.value
    return TopSample(at, status.ready_replicas, status.desired_replicas, rows, waiting, decisions)


def _rate(now: float | None, before: float | None, seconds: float) -> float | None:
    if now is None or before is None or seconds <= 0:
        return None
    return max(0.0, now - before) / seconds


def _cell(value: float | None, fmt: str, width: int) -> str:
    return f"{'-' if value is None else format(value, fmt):>{width}}"


def render(previous: TopSample | None, current: TopSample) -> str:
    """The screen for ``current``; rates need ``previous`` (else shown as '-')."""
    seconds = current.at - previous.at if previous is not None else 0.0
    before = {r.name: r.figures for r in previous.replicas} if previous is not None else {}
    lines = [f"inferstack top   replicas {current.ready} ready / {current.desired} desired   (Ctrl-C to quit)",
             f"{'NAME':6} {'STATE':10} {'RUN':>4} {'WAIT':>4} {'KV%':>6} {'TOK/S':>7} {'ACCEPT':>7}"]
    total: float | None = None
    for r in current.replicas:
        f, old = r.figures, before.get(r.name)
        tok_s = _rate(f.generation_tokens if f else None, old.generation_tokens if old else None, seconds)
        if tok_s is not None:
            total = (total or 0.0) + tok_s
        accept = f.acceptance_rate if f else None
        lines.append(f"{r.name:6} {r.state:10} {_cell(f.running if f else None, '.0f', 4)} "
                     f"{_cell(f.waiting if f else None, '.0f', 4)} "
                     f"{_cell(100 * f.kv_cache_usage if f else None, '.1f', 6)} {_cell(tok_s, '.1f', 7)} "
                     f"{_cell(100 * accept if accept is not None else None, '.0f', 6)}%")
    lines.append(f"{'all':6} {'':10} {'':>4} {'':>4} {'':>6} {_cell(total, '.1f', 7)}")
    if current.picker_waiting is None:
        lines.append("picker  (no gateway, or it did not answer)")
    else:
        # an outcome the previous page lacked had not happened yet: its counter was 0
        rates = {k: _rate(v, previous.decisions.get(k, 0.0) if previous is not None else None, seconds)
                 for k, v in sorted(current.decisions.items())}
        shown = ", ".join(f"{k or 'none'} {v:.1f}" for k, v in rates.items() if v is not None and v > 0) or "none"
        lines.append(f"picker  {current.picker_waiting:.0f} waiting; decisions/s: {shown}")
    return "\n".join(lines)


_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def _top(args: argparse.Namespace) -> int:
    state = StateFile()
    previous: TopSample | None = None
    shown = 0
    try:
        while True:
            status = state.live()
            if status is None:
                raise InferstackError("no stack is running (start one with `inferstack up --detach`)")
            current = sample(status, time.monotonic())
            if previous is not None or args.once is None:
                screen = render(previous, current)
                sys.stdout.write(screen + "\n" if args.once is not None else _CLEAR + screen + "\n")
                sys.stdout.flush()
                shown += 1
                if args.once is not None and shown >= args.once:
                    return 0
            previous = current
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    top = subparsers.add_parser("top", help="the running stack live: replicas, queue, KV, tok/s, picker decisions")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    top.add_argument("--once", type=int, nargs="?", const=1, metavar="N",
                     help="print N screens (default 1) without clearing, then exit (rates need two samples)")
    top.set_defaults(func=_top)
