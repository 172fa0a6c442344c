"""``inferstack tune-spec --output DIR [--dataset D] [--budget-s S] [--candidates C ...]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from inferstack.errors import ConfigError

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from inferstack.spectune.candidates import DEFAULT_CANDIDATES

    t = subparsers.add_parser(
        "tune-spec", help="measure speculative configs on your data (same run) and recommend one",
        description="Starts one replica per candidate config in turn, benchmarks it at 2-3 loads (the "
        "baseline's saturation probe sets them), and writes DIR/index.html (evidence) and "
        "DIR/recommended.yaml (a stack config for `inferstack up --config`).")
    t.add_argument("--output", type=Path, required=True, help="directory for the report, runs and config")
    t.add_argument("--dataset", default="documents",
                   help="documents (copy/summarize prompts shipped with inferstack, default) | synthetic | "
                   "shared-prefix | PATH (ShareGPT .json or a folder of text documents): use your own traffic")
    t.add_argument("--budget-s", type=float, default=1200.0,
                   help="wall-time budget in seconds (default 1200): sets the stage length and, if short, "
                   "leaves candidates out from the end of the list")
    t.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES), metavar="METHOD[:k=K,...]",
                   help="configs to try, e.g. none ngram:k=8 ngram:k=12,min=3,max=8 (keys: k, min, max, "
                   f"model); default: {' '.join(DEFAULT_CANDIDATES)}")
    t.add_argument("--loads", type=int, default=3, choices=(1, 2, 3, 4, 5), help="load levels (default 3)")
    t.add_argument("--config", type=Path, help="your stack config: measured with each candidate's "
                   "speculative: section; recommended.yaml is it plus the winner's")
    t.add_argument("--temperature", type=float, help="decoding temperature to measure with (e.g. 0: greedy); "
                   "also written into recommended.yaml (default: the model's generation config)")
    t.set_defaults(func=_tune_spec)


def _tune_spec(args: argparse.Namespace) -> int:
    from inferstack.spectune.candidates import parse_candidates, plan_budget
    from inferstack.spectune.runner import TuneOptions, load_base, tune

    if args.budget_s <= 0:
        raise ConfigError(f"--budget-s must be > 0, got {args.budget_s:g}")
    if args.temperature is not None and args.temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {args.temperature:g}")
    base = load_base(args.config)
    plan = plan_budget(parse_candidates(args.candidates), args.budget_s, args.loads)
    outcome = tune(TuneOptions(args.output, base, plan, args.dataset, args.temperature))
    out = args.output
    if outcome.recommendation is None:
        print(f"[tune-spec] no recommendation (see {out / 'index.html'})")
        return 1
    print(f"[tune-spec] recommended: {outcome.recommendation.summary}")
    for v in outcome.recommendation.verdicts:
        print(f"  {v.name}: {'eligible' if v.eligible else 'not eligible'}: {'; '.join(v.reasons)}")
    print(f"[tune-spec] report {out / 'index.html'}; config {out / 'recommended.yaml'} "
          f"(inferstack up --config {out / 'recommended.yaml'})")
    return 130 if outcome.interrupted else 0
