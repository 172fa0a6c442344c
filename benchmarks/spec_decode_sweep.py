"""Linear sweep on the default local stack: ngram speculation vs none, same data, alternated.

Numbers for the README ("numbers to report" of the benchmarking issue). For each run it starts
the default stack (``inferstack up --detach``: replicas behind the gateway) with one speculative
method, runs ``inferstack bench``, and stops it (``inferstack down``). Order alternates
(none, ngram, ngram, none, ... with ``--repeats``) so slow drift of the machine hits both.

The first run is a real linear sweep (saturation probe, then stages rising linearly); every
later run replays exactly that run's stage rates (``--profile constant --rate r1,r2,...``), so
all runs are compared stage by stage at the same offered load, on the same dataset
(``examples/bench/documents``: copy/summarize prompts, where n-gram speculation helps).

Decoding is greedy (``--override-generation-config {"temperature": 0}`` via the stack's
``engine.extra_args``) unless ``--sampled``: with the server's default temperature 1.0 the 135M
model's outputs are close to noise and no n-gram proposer can predict them.

Prints, per run: output tok/s and TTFT P50/P99 at the lowest and highest stage, the acceptance
rate; writes a report over all runs (``--report-dir``).

    .venv/bin/python benchmarks/spec_decode_sweep.py --stages 4 --duration 15 --out /tmp/sweep
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from inferstack.bench.report import write_report
from inferstack.bench.results import RunResult, load_run
from inferstack.process import free_port_block, free_ports

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ROOT / "examples" / "bench" / "documents"


def _cli(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "inferstack", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"inferstack {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}")
    return proc


def _one_run(method: str, run_dir: Path, bench_args: list[str], args: argparse.Namespace) -> RunResult:
    state = run_dir.parent / f"state-{run_dir.name}"
    state.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, INFERSTACK_STATE=str(state))
    listener, admin, grpc_port, metrics = free_ports(4)
    engine: dict[str, object] = {"base_port": free_port_block(args.replicas, start=19100)}
    if not args.sampled:
        engine["extra_args"] = ["--override-generation-config", json.dumps({"temperature": 0.0})]
    config = {
        "replicas": args.replicas,
        "speculative": {"method": method},
        "engine": engine,
        "gateway": {"port": listener, "admin_port": admin, "epp": {"grpc_port": grpc_port, "metrics_port": metrics}},
    }
    cfg = state / "stack.yaml"
    cfg.write_text(yaml.safe_dump(config))
    print(f"== {run_dir.name}: up (spec {method})", flush=True)
    _cli("up", "--detach", "--config", str(cfg), env=env, timeout=900)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "inferstack", "bench", *bench_args, "--dataset", str(DOCUMENTS),
             "--duration", str(args.duration), "--label", f"{method} ({run_dir.name})",
             "--spec-method", method, "--output", str(run_dir)],
            env=env, text=True, timeout=3600,
        )
        if proc.returncode != 0:
            raise SystemExit(f"bench of {run_dir} exited {proc.returncode}")
    finally:
        _cli("down", env=env, timeout=300)
    return load_run(run_dir)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"


def _summary(run: RunResult) -> str:
    lo, hi = run.stages[0], run.stages[-1]
    drafts = sum(s.server.counters["spec_draft_tokens"] for s in run.stages if s.server)
    accepted = sum(s.server.counters["spec_accepted_tokens"] for s in run.stages if s.server)
    acc = f"{accepted / drafts:.1%}" if drafts else "-"
    untrusted = [s.stage for s in run.stages if not s.trustworthy]
    return (
        f"{run.label}: lowest stage ({lo.requested_rate:g} req/s) {lo.output_tokens_per_s:.1f} out tok/s, "
        f"TTFT P50 {_ms(lo.ttft.p50)} P99 {_ms(lo.ttft.p99)}; highest stage ({hi.requested_rate:g} req/s) "
        f"{hi.output_tokens_per_s:.1f} out tok/s, TTFT P50 {_ms(hi.ttft.p50)} P99 {_ms(hi.ttft.p99)}; "
        f"acceptance {acc}; untrusted stages {untrusted or 'none'}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", type=int, default=7)
    p.add_argument("--duration", type=int, default=30)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1, help="pairs of runs (none/ngram, then ngram/none, ...)")
    p.add_argument("--probe-requests", type=int, default=60)
    p.add_argument("--sampled", action="store_true", help="keep the server's default temperature")
    p.add_argument("--rates", help="skip the sweep: replay these stage rates (r1,r2,...) in every run")
    p.add_argument("--start-with", choices=("none", "ngram"), default="none", help="method of the first run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--report-dir", type=Path)
    args = p.parse_args()
    first, second = (args.start_with, "ngram" if args.start_with == "none" else "none")
    order: list[str] = []
    for i in range(args.repeats):
        order += [first, second] if i % 2 == 0 else [second, first]
    runs: list[RunResult] = []
    rates: list[float] = [float(r) for r in args.rates.split(",")] if args.rates else []
    for i, method in enumerate(order):
        run_dir = args.out / f"{i + 1:02d}-{method}"
        if not rates:
            bench_args = ["--profile", "linear-sweep", "--stages", str(args.stages),
                          "--probe-requests", str(args.probe_requests)]
        else:
            bench_args = ["--profile", "constant", "--rate", ",".join(f"{r:g}" for r in rates)]
        run = _one_run(method, run_dir, bench_args, args)
        rates = rates or [s.requested_rate for s in run.stages if s.requested_rate]
        runs.append(run)
        print(_summary(run), flush=True)
    print("\n".join(["", "== summary"] + [_summary(r) for r in runs]))
    report_dir = args.report_dir or args.out / "report"
    print(write_report([Path(r.path) for r in runs], report_dir))
    print(f"report: {report_dir / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
