"""What the stack's Prometheus costs: its CPU and memory, and serving throughput with it on vs off.

One stack with monitoring on (``--replicas``, default 2; scrape every ``--interval`` s, default 5),
then rounds of the same closed-loop load through the gateway, off/on then on/off (ABBA, so a
drift over the run cancels) (``--clients`` streams
of ``--tokens`` output tokens, ``--seconds`` per round): in an "off" round Prometheus is frozen
(SIGSTOP: it neither scrapes nor evaluates rules), in an "on" round it runs. Same stack, same run:
only the ratios are read. Prometheus's CPU is its utime + stime over the "on" rounds (/proc), as a
share of one core and of the machine; its RSS is read at the end.

Target (issue 23): Prometheus CPU <= 2% at a 5 s scrape (RSS reported); output tok/s on >= 0.98x off.

    .venv/bin/python benchmarks/monitoring_cost.py [--rounds 4] [--seconds 30]

It loads both cores for ~6 minutes; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from benchlib import inferstack

from inferstack.process import free_port_block, free_ports

MODEL = "smollm2-135m-instruct"
PROMPT = "Write a short story about a lighthouse keeper."


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def load(base: str, clients: int, tokens: int, seconds: float) -> tuple[int, int]:
    """Closed loop for ``seconds``: (output tokens, failed requests)."""
    until = time.monotonic() + seconds
    out = failed = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal out, failed
        while time.monotonic() < until:
            r = await client.post(f"{base}/chat/completions", json={
                "model": MODEL, "max_tokens": tokens, "temperature": 0, "ignore_eos": True,
                "messages": [{"role": "user", "content": PROMPT}]})
            if r.status_code == 200:
                out += r.json()["usage"]["completion_tokens"]
            else:
                failed += 1

    async with httpx.AsyncClient(timeout=300) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return out, failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--interval", type=float, default=5.0, help="scrape interval (s)")
    ap.add_argument("--rounds", type=int, default=4, help="off/on pairs")
    ap.add_argument("--seconds", type=float, default=30.0, help="per round")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    state = Path(tempfile.mkdtemp(prefix="inferstack-monitoring-cost-"))
    env = dict(os.environ, INFERSTACK_STATE=str(state))
    listener, admin, grpc_port, metrics, prometheus = free_ports(5)
    config = {"model": MODEL, "replicas": args.replicas, "engine": {"base_port": free_port_block(args.replicas)},
              "gateway": {"port": listener, "admin_port": admin, "epp": {"grpc_port": grpc_port, "metrics_port": metrics}},
              "monitoring": {"enabled": True, "port": prometheus, "scrape_interval_s": args.interval}}
    (state / "stack.yaml").write_text(yaml.safe_dump(config))
    print(f"[bench] starting the stack ({state})", flush=True)
    inferstack(env, "up", "--detach", "--config", str(state / "stack.yaml"))
    results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    pid = 0
    try:
        status = json.loads(inferstack(env, "status", "--json"))
        base, pid = status["base_url"], int(status["monitoring"]["pid"])
        asyncio.run(load(base, args.clients, args.tokens, 10))  # warm-up
        for i in range(args.rounds):
            for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):  # ABBA: drift cancels
                os.kill(pid, signal.SIGSTOP if mode == "off" else signal.SIGCONT)
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                tokens, failed = asyncio.run(load(base, args.clients, args.tokens, args.seconds))
                wall = time.monotonic() - t0
                row = {"tok_s": tokens / wall, "failed": failed, "prometheus_cpu_share_of_one_core":
                       (cpu_seconds(pid) - cpu0) / wall}
                results[mode].append(row)
                print(f"[bench] round {i + 1} {mode:3}: {row['tok_s']:.1f} output tok/s, {failed} failed, "
                      f"Prometheus CPU {100 * row['prometheus_cpu_share_of_one_core']:.2f}% of one core", flush=True)
        os.kill(pid, signal.SIGCONT)
        rss = rss_mib(pid)
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        inferstack(env, "down")

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    cores = len(os.sched_getaffinity(0))
    cpu = mean(results["on"], "prometheus_cpu_share_of_one_core")
    ratio = mean(results["on"], "tok_s") / mean(results["off"], "tok_s")
    per_pair = [on["tok_s"] / off["tok_s"] for off, on in zip(results["off"], results["on"], strict=True)]
    summary = {"throughput_on_over_off": round(ratio, 3), "per_pair": [round(r, 3) for r in per_pair],
               "prometheus_cpu_percent_of_one_core": round(100 * cpu, 2),
               "prometheus_cpu_percent_of_machine": round(100 * cpu / cores, 2), "prometheus_rss_mib": round(rss, 1),
               "scrape_interval_s": args.interval, "failed": sum(r["failed"] for rs in results.values() for r in rs)}
    print(json.dumps(summary, indent=2))
    print(f"target: Prometheus CPU <= 2%: {'met' if 100 * cpu / cores <= 2 else 'NOT met'} "
          f"({summary['prometheus_cpu_percent_of_machine']}% of the machine, "
          f"{summary['prometheus_cpu_percent_of_one_core']}% of one core); throughput on/off >= 0.98: "
          f"{'met' if ratio >= 0.98 else 'NOT met'} ({ratio:.3f})")
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "rounds": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
