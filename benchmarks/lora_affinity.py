"""LoRA on the local stack, same run: adapter load time, and a mixed base + 2 adapters workload
routed with LoRA affinity vs round-robin.

For each picker config, starts `inferstack up --detach --lora` (2 vLLM-CPU replicas, ``max_loras``
1: one adapter per batch, as a GPU replica with few LoRA slots), loads the bundled adapter (the
one `make setup` trains) under two names with `inferstack adapters load` (timed: every replica),
then runs ``--clients`` streaming clients for ``--duration`` s, each request's model chosen in turn
from base, adapter-1, adapter-2. Prints per config: TTFT p50/p90, output tok/s, failures, and
affinity / round-robin ratios. Configs: ``lora-affinity`` (the default profile plus the ``lora``
scorer: adapter running > free slot > waiting) and ``round-robin``.

    .venv/bin/python benchmarks/lora_affinity.py [--duration 60] [--clients 6]

It loads both cores for ~5 minutes; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from inferstack.lora import bundled_adapter
from inferstack.process import free_port_block, free_ports

CONFIGS = {
    "lora-affinity": {"scorers": [{"type": "prefix"}, {"type": "no-hit-lru"}, {"type": "queue"},
                                  {"type": "kv-cache"}, {"type": "lora", "weight": 2}]},
    "round-robin": {"picker": "round-robin", "scorers": []},
}
ADAPTERS = ("adapter-1", "adapter-2")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "inferstack", *args], env=env, text=True, capture_output=True,
                          timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"inferstack {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _stream_one(client: httpx.Client, base: str, model: str, prompt: str, max_tokens: int) -> tuple[float, int, float]:
    """(TTFT s, output tokens, e2e s) of one streaming chat completion."""
    t0 = time.perf_counter()
    ttft, tokens = None, 0
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0,
            "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": prompt}]}
    with client.stream("POST", f"{base}/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content") and ttft is None:
                ttft = time.perf_counter() - t0
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return ttft or (time.perf_counter() - t0), tokens, time.perf_counter() - t0


def _load(base: str, served: str, clients: int, duration: float, max_tokens: int) -> dict:
    results: list[tuple[str, float, int, float]] = []
    failures: list[str] = []
    stop = time.monotonic() + duration
    models = [served, *ADAPTERS]

    def worker(i: int) -> None:
        n = i
        with httpx.Client(timeout=300) as client:
            while time.monotonic() < stop:
                model = models[n % len(models)]
                n += 1
                try:
                    ttft, tokens, e2e = _stream_one(client, base, model, f"Client {i} asks #{n}: tell me about ships.",
                                                    max_tokens)
                    results.append((model, ttft, tokens, e2e))
                except httpx.HTTPError as exc:
                    failures.append(f"{model}: {exc!r}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ttfts = sorted(r[1] for r in results)
    return {
        "requests": len(results), "failures": len(failures), "failure_examples": failures[:3],
        "ttft_p50": statistics.median(ttfts) if ttfts else None,
        "ttft_p90": ttfts[int(0.9 * (len(ttfts) - 1))] if ttfts else None,
        "output_tok_s": sum(r[2] for r in results) / wall,
        "per_model_ttft_p50": {m: statistics.median([r[1] for r in results if r[0] == m] or [0]) for m in models},
    }


def _run(name: str, scheduler: dict, args: argparse.Namespace, out: Path) -> dict:
    state = out / f"state-{name}"
    state.mkdir(parents=True)
    env = dict(os.environ, INFERSTACK_STATE=str(state))
    listener, admin, grpc_port, metrics = free_ports(4)
    config = {
        "replicas": 2, "speculative": {"method": "none"},
        "engine": {"base_port": free_port_block(2, start=19800), "max_model_len": 1024},
        "gateway": {"port": listener, "admin_port": admin,
                    "epp": {"grpc_port": grpc_port, "metrics_port": metrics, "scheduler": scheduler}},
        "batch": {"enabled": False},
        "lora": {"enabled": True, "max_loras": 1, "max_lora_rank": 8, "max_cpu_loras": 2},
    }
    (state / "stack.yaml").write_text(yaml.safe_dump(config))
    print(f"[{name}] starting the stack", flush=True)
    _cli(env, "up", "--detach", "--config", str(state / "stack.yaml"))
    try:
        data = json.loads(_cli(env, "status", "--json").stdout)
        load_s = []
        for adapter in ADAPTERS:
            t0 = time.perf_counter()
            _cli(env, "adapters", "load", adapter, str(bundled_adapter()))
            load_s.append(time.perf_counter() - t0)
        print(f"[{name}] adapters loaded on 2 replicas in {', '.join(f'{s:.2f}s' for s in load_s)}; "
              f"{args.clients} clients for {args.duration:.0f}s", flush=True)
        _load(data["base_url"], data["model"], args.clients, 10, args.max_tokens)  # warm-up, unmeasured
        result = _load(data["base_url"], data["model"], args.clients, args.duration, args.max_tokens)
    finally:
        _cli(env, "down")
    return {"config": name, "adapter_load_s": load_s, **result}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="lora-affinity-"))
    out.mkdir(parents=True, exist_ok=True)
    runs = [_run(name, scheduler, args, out) for name, scheduler in CONFIGS.items()]
    (out / "summary.json").write_text(json.dumps(runs, indent=2))
    print(f"\n{'config':14} {'load s':>12} {'req':>5} {'fail':>4} {'TTFT p50':>9} {'TTFT p90':>9} {'out tok/s':>9}")
    for r in runs:
        print(f"{r['config']:14} {'/'.join(f'{s:.2f}' for s in r['adapter_load_s']):>12} {r['requests']:>5} "
              f"{r['failures']:>4} {r['ttft_p50']:>9.3f} {r['ttft_p90']:>9.3f} {r['output_tok_s']:>9.1f}")
    a, rr = runs
    print(f"\nlora-affinity / round-robin: TTFT p50 {a['ttft_p50'] / rr['ttft_p50']:.2f}x, "
          f"p90 {a['ttft_p90'] / rr['ttft_p90']:.2f}x, output tok/s {a['output_tok_s'] / rr['output_tok_s']:.2f}x")
    print(f"per-model TTFT p50: {json.dumps({r['config']: r['per_model_ttft_p50'] for r in runs})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
