"""Batch inference on the same stack: batch throughput, and what a running batch costs online traffic.

Starts a stack (``inferstack up --detach`` in a private state dir on free ports; or uses a running
one with ``--base-url``), then, same run:

1. **idle batch throughput**: one batch of ``--lines`` chat lines (``--max-tokens`` each) through the
   official ``openai`` client; lines/s and output tok/s from create to completed;
2. **online alone**: streamed chat requests at a fixed rate (``--rate`` req/s, constant arrivals) for
   ``--duration`` s; TTFT P50/P99 (time to the first content chunk) and errors;
3. **online + batch**: the same online load while a large batch (``--big-lines``) runs; TTFT
   P50/P99 again, and how many batch lines completed meanwhile (the batch must still progress).

Prints the numbers and the ratios (target: online TTFT P99 <= 1.2x with the batch running) and
writes them as JSON to ``--out``.

    .venv/bin/python benchmarks/batch_throughput.py [--replicas 2] [--lines 100] [--rate 1] [--duration 60]
        [--flow-control PER_ENDPOINT]

It loads both cores for several minutes; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
import yaml

from benchlib import quantile

from inferstack.process import free_port_block, free_ports

PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten-year-old.",
    "List ten fruits and one fact about each.",
    "Describe the water cycle in a few sentences.",
]


def _cli(*args: str, env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run([sys.executable, "-m", "inferstack", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"inferstack {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def _batch_lines(model: str, n: int, max_tokens: int, tag: str) -> bytes:
    return b"".join(json.dumps({
        "custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
                 "messages": [{"role": "user", "content": f"{PROMPTS[i % len(PROMPTS)]} ({tag} {i})"}]},
    }).encode() + b"\n" for i in range(n))


def _submit(client: openai.OpenAI, data: bytes) -> str:
    f = client.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id


async def _online(base_url: str, model: str, rate: float, duration_s: float, max_tokens: int) -> dict:
    ttfts: list[float] = []
    errors = 0

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal errors
        body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                "messages": [{"role": "user", "content": f"{PROMPTS[i % len(PROMPTS)]} (online {i})"}]}
        begun = time.perf_counter()
        try:
            async with client.stream("POST", f"{base_url}/chat/completions", json=body) as resp:
                if resp.status_code != 200:
                    errors += 1
                    await resp.aread()
                    return
                first = None
                async for line in resp.aiter_lines():
                    if first is None and line.startswith("data: ") and '"content"' in line:
                        first = time.perf_counter() - begun
                if first is not None:
                    ttfts.append(first)
        except httpx.HTTPError:
            errors += 1

    async with httpx.AsyncClient(timeout=300) as client:
        tasks = []
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < duration_s:
            tasks.append(asyncio.create_task(one(client, i)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
    return {"sent": i, "errors": errors, "ttft_p50_s": quantile(ttfts, 0.5), "ttft_p99_s": quantile(ttfts, 0.99),
            "ttft_mean_s": statistics.fmean(ttfts) if ttfts else None}


def run(args: argparse.Namespace, base_url: str, model: str) -> dict:
    client = openai.OpenAI(base_url=base_url, api_key="none", timeout=120)
    results: dict = {"config": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str))}}

    # 1. idle batch throughput
    begun = time.monotonic()
    batch_id = _submit(client, _batch_lines(model, args.lines, args.max_tokens, "idle"))
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "cancelled"):
        time.sleep(0.5)
    wall = time.monotonic() - begun
    results["idle_batch"] = {"status": batch.status, "lines": batch.request_counts.completed,
                             "failed": batch.request_counts.failed, "wall_s": round(wall, 2),
                             "lines_per_s": round(batch.request_counts.completed / wall, 3),
                             "output_tok_per_s": round(batch.usage.output_tokens / wall, 1)}
    print(f"idle batch: {results['idle_batch']}", flush=True)

    # 2. online alone
    results["online_alone"] = asyncio.run(_online(base_url, model, args.rate, args.duration, args.online_max_tokens))
    print(f"online alone: {results['online_alone']}", flush=True)

    # 3. online with a large batch running
    big = _submit(client, _batch_lines(model, args.big_lines, args.max_tokens, "big"))
    while client.batches.retrieve(big).status == "validating":
        time.sleep(0.2)
    before = client.batches.retrieve(big).request_counts.completed
    results["online_with_batch"] = asyncio.run(_online(base_url, model, args.rate, args.duration,
                                                       args.online_max_tokens))
    after = client.batches.retrieve(big)
    results["online_with_batch"]["batch_lines_done_meanwhile"] = after.request_counts.completed - before
    client.batches.cancel(big)
    print(f"online with batch: {results['online_with_batch']}", flush=True)

    alone, mixed = results["online_alone"], results["online_with_batch"]
    if alone["ttft_p99_s"] and mixed["ttft_p99_s"]:
        results["ttft_p50_ratio"] = round(mixed["ttft_p50_s"] / alone["ttft_p50_s"], 2)
        results["ttft_p99_ratio"] = round(mixed["ttft_p99_s"] / alone["ttft_p99_s"], 2)
    print(f"online TTFT with/without batch: P50 x{results.get('ttft_p50_ratio')}, "
          f"P99 x{results.get('ttft_p99_ratio')} (target P99 <= 1.2x); batch lines done meanwhile: "
          f"{mixed['batch_lines_done_meanwhile']}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", help="use this running stack (e.g. http://127.0.0.1:8080/v1)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--lines", type=int, default=100, help="lines of the idle-throughput batch")
    parser.add_argument("--big-lines", type=int, default=2000, help="lines of the batch run beside online load")
    parser.add_argument("--max-tokens", type=int, default=64, help="output tokens per batch line")
    parser.add_argument("--rate", type=float, default=1.0, help="online requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of online load per phase")
    parser.add_argument("--online-max-tokens", type=int, default=32)
    parser.add_argument("--flow-control", type=int, metavar="PER_ENDPOINT",
                        help="run the stack with flow control on, this max_requests_per_endpoint (batch lines "
                        "then wait in the picker's lowest band instead of being shed)")
    parser.add_argument("--out", type=Path, default=Path("batch-throughput.json"))
    args = parser.parse_args()
    if args.base_url:
        results = run(args, args.base_url, args.model)
    else:
        state = Path(tempfile.mkdtemp(prefix="inferstack-batch-bench-"))
        env = dict(os.environ, INFERSTACK_STATE=str(state))
        listener, admin, grpc_port, metrics = free_ports(4)
        config = state / "stack.yaml"
        config.write_text(yaml.safe_dump({
            "model": args.model, "replicas": args.replicas,
            "engine": {"base_port": free_port_block(args.replicas)},
            "gateway": {"port": listener, "admin_port": admin,
                        "epp": {"grpc_port": grpc_port, "metrics_port": metrics},
                        **({"flow_control": {"enabled": True, "max_requests_per_endpoint": args.flow_control}}
                           if args.flow_control else {})},
            "batch": {"enabled": True}}))
        _cli("up", "--detach", "--config", str(config), env=env)
        try:
            base = json.loads(_cli("status", "--json", env=env))["base_url"]
            results = run(args, base, args.model)
        finally:
            _cli("down", env=env, timeout=300)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
