"""Many tenants on one stack: what a noisy tenant does to a quiet one, with and without flow control.

Starts a stack twice in a private state dir on free ports (``--replicas``, default 2), first with
flow control off, then on, and runs the same phases on each (same run: only ratios are read):

0. **knee** (flow control off, once): closed-loop streams at 1, 2, 4, ... per replica for
   ``--knee-seconds`` each; output tok/s per concurrency. ``max_requests_per_endpoint`` becomes
   the smallest concurrency within ``--knee-share`` (95%) of the best: the detector's bound is
   measured here, not guessed (or give ``--per-endpoint N``);
1. **quiet alone**: the quiet tenant sends one short streamed request every ``--quiet-interval`` s
   for ``--duration`` s; TTFT (time to the first content chunk) P50/P99;
2. **noisy neighbour**: the same quiet load (from a process of its own, so reading the noisy
   streams cannot delay its clock) while the noisy tenant keeps ``--noisy-streams`` long streams
   open (closed loop, ``--noisy-tokens`` output tokens each, ignore_eos); quiet TTFT again, the
   noisy tenant's output tok/s, failures (429s counted apart);
3. **two backlogged tenants**: tenant ``a`` keeps ``--a-streams`` and tenant ``b`` ``--b-streams``
   streams open (same request size); weighted tokens served per tenant (input x1 + output x2, from
   ``usage``) per ``--window`` s; Jain's index over the run's totals and the gap per window.

Targets (issue 21): quiet TTFT P99 under the flood <= 1.5x alone (flow control on); noisy tok/s on
>= 0.9x off; Jain >= 0.95 with a gap that does not grow; uncontended TTFT P50 on <= 1.05x off;
0 failures but deliberate 429s. Prints the ratios and writes everything as JSON to ``--out``.

    .venv/bin/python benchmarks/fairness.py [--duration 30] [--noisy-streams 128]

It loads both cores for ~10 minutes; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from benchlib import inferstack, quantile

from inferstack.gateway.fair_queue import jain_index
from inferstack.process import free_port_block, free_ports
from inferstack.wire import FAIRNESS_ID_HEADER

MODEL = "smollm2-135m-instruct"
QUIET_PROMPT = "Say hello in French."
NOISY_PROMPT = "Write a long story about a lighthouse keeper and a storm at sea."


@dataclass
class Tally:
    ttfts: list[float] = field(default_factory=list)
    output_tokens: int = 0
    weighted: list[tuple[float, float]] = field(default_factory=list)  # (end time, weighted tokens)
    ok: int = 0
    rejected: int = 0  # 429: flow control said no, on purpose
    failed: int = 0


async def stream_one(client: httpx.AsyncClient, base: str, tenant: str, prompt: str, max_tokens: int,
                     tally: Tally) -> int:
    """One streamed request; its HTTP status (0: no answer)."""
    body = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": prompt}]}
    begun = time.perf_counter()
    try:
        async with client.stream("POST", f"{base}/chat/completions", json=body,
                                 headers={FAIRNESS_ID_HEADER: tenant}) as r:
            if r.status_code != 200:
                await r.aread()
                if r.status_code == 429:
                    tally.rejected += 1
                else:
                    tally.failed += 1
                return r.status_code
            first = None
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                if first is None and '"content"' in line:
                    first = time.perf_counter() - begun
                if '"usage":{' in line or '"usage": {' in line:
                    usage = json.loads(line[6:]).get("usage") or {}
                    out = int(usage.get("completion_tokens") or 0)
                    tally.output_tokens += out
                    tally.weighted.append((time.perf_counter(), int(usage.get("prompt_tokens") or 0) + 2 * out))
    except httpx.HTTPError:
        tally.failed += 1
        return 0
    if first is not None:
        tally.ttfts.append(first)
    tally.ok += 1
    return 200


async def closed_loop(base: str, tenant: str, streams: int, until: float, max_tokens: int, tally: Tally) -> None:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=streams + 8)) as client:
        async def worker() -> None:
            while time.perf_counter() < until:
                if await stream_one(client, base, tenant, NOISY_PROMPT, max_tokens, tally) != 200:
                    await asyncio.sleep(0.5)  # a 429 names a Retry-After; a closed loop backs off a little
        await asyncio.gather(*(worker() for _ in range(streams)))


def quiet_in_own_process(base: str, interval_s: float, seconds: float) -> concurrent.futures.Future[Tally]:
    """The quiet tenant's load from a process of its own: its TTFTs are not delayed by this
    process's event loop reading the noisy tenant's streams."""
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(_quiet_process, base, interval_s, seconds)
    pool.shutdown(wait=False)
    return future


def _quiet_process(base: str, interval_s: float, seconds: float) -> Tally:
    tally = Tally()
    asyncio.run(quiet_load(base, interval_s, time.perf_counter() + seconds, tally))
    return tally


async def quiet_load(base: str, interval_s: float, until: float, tally: Tally) -> None:
    async with httpx.AsyncClient(timeout=600) as client:
        tasks = []
        start = time.perf_counter()
        i = 0
        while time.perf_counter() < until:
            tasks.append(asyncio.create_task(stream_one(client, base, "quiet", f"{QUIET_PROMPT} ({i})", 8, tally)))
            i += 1
            await asyncio.sleep(max(0.0, start + i * interval_s - time.perf_counter()))
        await asyncio.gather(*tasks)


def summary(t: Tally, seconds: float) -> dict:
    """``seconds``: from the phase's start until its last request ended."""
    return {"ok": t.ok, "rejected_429": t.rejected, "failed": t.failed,
            "ttft_p50_s": quantile(t.ttfts, 0.5), "ttft_p99_s": quantile(t.ttfts, 0.99),
            "output_tok_s": round(t.output_tokens / seconds, 1)}


async def knee(base: str, replicas: int, seconds: float, share: float) -> tuple[int, dict[int, float]]:
    rates: dict[int, float] = {}
    per = 1
    while per <= 64:
        tally = Tally()
        t0 = time.perf_counter()
        await closed_loop(base, "knee", per * replicas, t0 + seconds, 32, tally)
        rates[per] = tally.output_tokens / (time.perf_counter() - t0)  # until the last stream ended
        print(f"  knee: {per} per replica -> {rates[per]:.0f} output tok/s", flush=True)
        per *= 2
    best = max(rates.values())
    return min(p for p, r in rates.items() if r >= share * best), rates


async def phases(base: str, args: argparse.Namespace) -> dict:
    out: dict = {}
    quiet = Tally()
    t0 = time.perf_counter()
    await quiet_load(base, args.quiet_interval, t0 + args.duration, quiet)
    out["quiet_alone"] = summary(quiet, time.perf_counter() - t0)
    print(f"  quiet alone: {out['quiet_alone']}", flush=True)

    noisy = Tally()
    t0 = time.perf_counter()
    quiet_run = quiet_in_own_process(base, args.quiet_interval, args.duration)
    await closed_loop(base, "noisy", args.noisy_streams, t0 + args.duration, args.noisy_tokens, noisy)
    took = time.perf_counter() - t0
    quiet = await asyncio.wrap_future(quiet_run)
    out["noisy_neighbour"] = {"quiet": summary(quiet, took), "noisy": summary(noisy, took)}
    print(f"  noisy neighbour: {out['noisy_neighbour']}", flush=True)

    a, b = Tally(), Tally()
    t0 = time.perf_counter()
    until = t0 + args.duration
    await asyncio.gather(closed_loop(base, "a", args.a_streams, until, args.noisy_tokens, a),
                         closed_loop(base, "b", args.b_streams, until, args.noisy_tokens, b))
    windows = int(args.duration // args.window)
    served = {name: [sum(w for at, w in t.weighted if t0 + k * args.window <= at < t0 + (k + 1) * args.window)
                     for k in range(windows)] for name, t in (("a", a), ("b", b))}
    cumulative_gap, gap = [], 0.0
    for k in range(windows):
        gap += served["a"][k] - served["b"][k]
        cumulative_gap.append(round(gap))
    took = time.perf_counter() - t0
    out["two_backlogged"] = {"a": summary(a, took), "b": summary(b, took),
                             "weighted_per_window": served, "cumulative_gap": cumulative_gap,
                             "jain": jain_index([sum(served["a"]), sum(served["b"])])}
    print(f"  two backlogged: jain {out['two_backlogged']['jain']}, cumulative gap a-b {cumulative_gap}", flush=True)
    return out


def stack_config(args: argparse.Namespace, per_endpoint: int | None) -> dict:
    listener, admin, grpc_port, metrics = free_ports(4)
    gateway: dict = {"port": listener, "admin_port": admin, "epp": {"grpc_port": grpc_port, "metrics_port": metrics}}
    if per_endpoint is not None:
        gateway["flow_control"] = {"enabled": True, "max_requests_per_endpoint": per_endpoint, "max_requests": 1000,
                                   "max_wait_s": 240}
        gateway["stream_idle_timeout_s"] = 300
    return {"model": MODEL, "replicas": args.replicas, "engine": {"base_port": free_port_block(args.replicas)},
            "batch": {"enabled": False}, "gateway": gateway}


def run_stack(args: argparse.Namespace, per_endpoint: int | None, want_knee: bool) -> dict:
    state = Path(tempfile.mkdtemp(prefix="inferstack-fairness-"))
    env = dict(os.environ, INFERSTACK_STATE=str(state))
    (state / "stack.yaml").write_text(yaml.safe_dump(stack_config(args, per_endpoint)))
    inferstack(env, "up", "--detach", "--config", str(state / "stack.yaml"))
    try:
        base = json.loads(inferstack(env, "status", "--json"))["base_url"]
        result: dict = {}
        if want_knee:
            result["knee_per_replica"], result["knee_tok_s"] = asyncio.run(
                knee(base, args.replicas, args.knee_seconds, args.knee_share))
        result.update(asyncio.run(phases(base, args)))
        return result
    finally:
        inferstack(env, "down")


def ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 2) if num is not None and den else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--quiet-interval", type=float, default=2.0)
    parser.add_argument("--noisy-streams", type=int, default=128)
    parser.add_argument("--noisy-tokens", type=int, default=64)
    parser.add_argument("--a-streams", type=int, default=48)
    parser.add_argument("--b-streams", type=int, default=16)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--per-endpoint", type=int, help="flow control's bound (default: measured, phase 0)")
    parser.add_argument("--knee-seconds", type=float, default=10.0)
    parser.add_argument("--knee-share", type=float, default=0.95)
    parser.add_argument("--out", type=Path, default=Path("fairness.json"))
    args = parser.parse_args()

    print("flow control off", flush=True)
    off = run_stack(args, None, want_knee=args.per_endpoint is None)
    per_endpoint = args.per_endpoint or off["knee_per_replica"]
    print(f"flow control on, max_requests_per_endpoint {per_endpoint}", flush=True)
    on = run_stack(args, per_endpoint, want_knee=False)

    def quiet_p99_ratio(r: dict) -> float | None:
        return ratio(r["noisy_neighbour"]["quiet"]["ttft_p99_s"], r["quiet_alone"]["ttft_p99_s"])

    report = {
        "quiet_ttft_p99_flood_over_alone": {"off": quiet_p99_ratio(off), "on": quiet_p99_ratio(on), "target_on": 1.5},
        "noisy_tok_s_on_over_off": ratio(on["noisy_neighbour"]["noisy"]["output_tok_s"],
                                         off["noisy_neighbour"]["noisy"]["output_tok_s"]),
        "jain": {"off": off["two_backlogged"]["jain"], "on": on["two_backlogged"]["jain"], "target_on": 0.95},
        "uncontended_ttft_p50_on_over_off": ratio(on["quiet_alone"]["ttft_p50_s"], off["quiet_alone"]["ttft_p50_s"]),
        "failures": {"off": sum(p["failed"] for p in _summaries(off)), "on": sum(p["failed"] for p in _summaries(on))},
    }
    args.out.write_text(json.dumps({"config": vars(args) | {"out": str(args.out)}, "per_endpoint": per_endpoint,
                                    "off": off, "on": on, "report": report}, indent=2, default=str))
    print(json.dumps(report, indent=2))
    print(f"results: {args.out}")
    return 0


def _summaries(r: dict) -> list[dict]:
    return [r["quiet_alone"], r["noisy_neighbour"]["quiet"], r["noisy_neighbour"]["noisy"],
            r["two_backlogged"]["a"], r["two_backlogged"]["b"]]


if __name__ == "__main__":
    sys.exit(main())
