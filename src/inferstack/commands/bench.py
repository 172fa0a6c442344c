"""``inferstack bench`` and ``inferstack report``.

- ``bench --profile linear-sweep|constant|poisson|concurrency [--rate R] [--duration S]
  [--stages N] [--dataset synthetic|shared-prefix|PATH] [--target URL] --output RUN_DIR``
- ``report RUN_DIR [RUN_DIR...] --output REPORT_DIR`` (HTML + PNGs, Markdown on stdout);
  ``report --compare RUN_A RUN_B`` (per-stage ratios B/A).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from inferstack.bench.settings import PROFILES, BenchSettings
from inferstack.bench.stack import local_stack_defaults
from inferstack.errors import ConfigError

__all__ = ["register", "settings_from_args"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    b = subparsers.add_parser("bench", help="benchmark a server with inference-perf (+ per-stage server metrics)")
    b.add_argument("--profile", choices=PROFILES, default="linear-sweep", help="load profile")
    b.add_argument("--rate", type=_rates, help="highest stage rate (req/s) or concurrency (constant/poisson/"
                   "concurrency); stages rise linearly to it. A list R1,R2,... gives every stage's rate")
    b.add_argument("--duration", type=int, default=30, help="seconds per stage (default 30)")
    b.add_argument("--stages", type=int, default=7, help="number of stages (default 7)")
    b.add_argument("--dataset", default="synthetic", help="synthetic | shared-prefix | documents (copy/summarize "
                   "prompts shipped with inferstack) | PATH (ShareGPT .json or text folder)")
    b.add_argument("--target", help="server base URL, e.g. http://127.0.0.1:8101 (default: the local stack)")
    b.add_argument("--model", help="served model name (default: the one the target serves)")
    b.add_argument("--tokenizer", type=Path, help="local tokenizer folder (default: the bundled model's)")
    b.add_argument("--api", choices=("completion", "chat"), default="completion", help="OpenAI API to use")
    b.add_argument("--metrics-url", action="append", default=[], dest="metrics_urls",
                   help="replica base URL whose /metrics to sample (repeat; default: the target)")
    b.add_argument("--prometheus", metavar="URL", help="also let inference-perf read server metrics from this "
                   "Prometheus (e.g. the stack's with `up --monitoring`: `status --json` monitoring.url)")
    b.add_argument("--probe-requests", type=int, default=60, help="linear-sweep: saturation probe burst size")
    b.add_argument("--label", help="label of this run in reports")
    b.add_argument("--spec-method", help="speculative method of the stack, recorded in run.json")
    b.add_argument("--routing", help="routing policy of the stack, recorded in run.json")
    b.add_argument("--output", type=Path, required=True, help="run directory to create")
    b.set_defaults(func=_bench)

    r = subparsers.add_parser("report", help="HTML/PNG report and Markdown summary of benchmark runs")
    r.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR", help="run directories to overlay")
    r.add_argument("--output", type=Path, help="report directory (HTML + PNGs)")
    r.add_argument("--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"), help="per-stage ratios B/A")
    r.set_defaults(func=_report)


def _rates(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--rate '{text}' must be a number or a comma-separated list") from exc
    if not values:
        raise argparse.ArgumentTypeError("--rate needs a value")
    return values


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Flags -> settings; without --target the running local stack supplies the defaults."""
    target, model, tokenizer = args.target, args.model, args.tokenizer
    metrics_urls, spec, routing = tuple(args.metrics_urls), args.spec_method, args.routing
    if target is None:
        stack = local_stack_defaults()
        target = stack.target
        model = model or stack.model
        tokenizer = tokenizer or stack.tokenizer
        metrics_urls = metrics_urls or stack.metrics_urls
        spec = spec or stack.spec_method
        routing = routing or stack.routing
    try:
        return BenchSettings(
            profile=args.profile,
            rate=args.rate[-1] if args.rate and len(args.rate) == 1 else None,
            rates=args.rate if args.rate and len(args.rate) > 1 else (),
            duration_s=args.duration,
            stages=args.stages,
            dataset=args.dataset,
            target=target,
            model=model,
            tokenizer=tokenizer,
            api=args.api,
            metrics_urls=metrics_urls,
            prometheus_url=args.prometheus,
            probe_requests=args.probe_requests,
            label=args.label,
            spec_method=spec,
            routing=routing,
        )
    except ValidationError as exc:
        problems = "; ".join(  # pydantic's "Value error, " prefix says nothing to a CLI user
            f"{'.'.join(str(p) for p in e['loc']) or 'bench'}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise ConfigError(f"invalid bench options: {problems}") from exc


def _bench(args: argparse.Namespace) -> int:
    from inferstack.bench.runner import run_bench

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per scrape drowns the progress lines
    manifest = run_bench(settings_from_args(args), args.output)
    print(f"run {manifest.status}: {manifest.stages_finished} stage(s) in {args.output}")
    return 0 if manifest.status == "completed" else 1


def _report(args: argparse.Namespace) -> int:
    from inferstack.bench.report import compare_runs, write_report

    if args.compare:
        if args.runs or args.output:
            raise ConfigError("--compare RUN_A RUN_B takes no other run directories or --output")
        print(compare_runs(*args.compare))
        return 0
    if not args.runs:
        raise ConfigError("report needs at least one RUN_DIR (or --compare RUN_A RUN_B)")
    if args.output is None:
        raise ConfigError("report needs --output REPORT_DIR")
    sys.stdout.write(write_report(args.runs, args.output))
    return 0
