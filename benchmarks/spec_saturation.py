"""Speculation at saturation: generation throughput of one replica with many requests in flight.

For each config a one-replica stack (``inferstack up --detach``, no gateway, greedy) gets
``--clients`` concurrent streams of copy/summarize prompts (the shipped documents) for
``--seconds``; the replica's own counters give generated tokens/s and the drafts made. Configs use
the ``tune-spec`` syntax, the baseline ``none`` first; every figure is a ratio against it, same run.

    .venv/bin/python benchmarks/spec_saturation.py --clients 32 --seconds 40 \\
        --configs none ngram:k=8 ngram:k=8,off=1
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

import httpx
import yaml

from inferstack.bench.datasets import BUNDLED_DOCUMENTS, documents_to_sharegpt
from inferstack.engine.metrics import fetch_figures
from inferstack.process import free_port_block
from inferstack.spectune.candidates import Candidate, parse_candidates


def _cli(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "inferstack", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"inferstack {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}")


def _prompts(tmp: Path) -> list[tuple[str, int]]:
    out = tmp / "docs.json"
    documents_to_sharegpt(BUNDLED_DOCUMENTS, out, 128)
    return [(c["conversations"][0]["value"], 128) for c in json.loads(out.read_text())]


def _load(url: str, model: str, prompts: list[tuple[str, int]], clients: int, seconds: float) -> int:
    stop = time.monotonic() + seconds
    failures = [0]

    def client(i: int) -> None:
        with httpx.Client(timeout=300) as http:
            n = i
            while time.monotonic() < stop:
                prompt, tokens = prompts[n % len(prompts)]
                n += clients
                r = http.post(f"{url}/v1/completions", json={"model": model, "prompt": prompt,
                                                             "max_tokens": tokens, "temperature": 0})
                failures[0] += r.status_code != 200

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures[0]


def _measure(c: Candidate, args: argparse.Namespace, prompts: list[tuple[str, int]]) -> dict:
    with tempfile.TemporaryDirectory() as state:
        env = dict(os.environ, INFERSTACK_STATE=state)
        port = free_port_block(1, start=19400)
        config = {"replicas": 1, "speculative": c.section(), "gateway": {"enabled": False},
                  "batch": {"enabled": False}, "engine": {"base_port": port, "extra_args": [
                      "--override-generation-config", json.dumps({"temperature": 0.0}), *args.vllm_args]}}
        path = Path(state) / "stack.yaml"
        path.write_text(yaml.safe_dump(config))
        _cli("up", "--detach", "--config", str(path), env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
            before, t0 = fetch_figures(url), time.monotonic()
            failures = _load(url, model, prompts, args.clients, args.seconds)
            after, elapsed = fetch_figures(url), time.monotonic() - t0
        finally:
            _cli("down", env=env)
    assert before is not None and after is not None
    return {"gen_tok_s": (after.generation_tokens - before.generation_tokens) / elapsed,
            "drafts": after.spec_drafts - before.spec_drafts, "failures": failures}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=40)
    p.add_argument("--configs", nargs="+", default=["none", "ngram:k=8", "ngram:k=8,off=1"])
    p.add_argument("--vllm-args", nargs="*", default=[], help="extra vLLM flags for every config")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prompts = _prompts(Path(tmp))
    results = []
    for c in parse_candidates(args.configs):
        r = _measure(c, args, prompts)
        results.append((c, r))
        print(f"{c.name:20} {r['gen_tok_s']:7.1f} generated tok/s, {r['drafts']:6.0f} drafts, "
              f"{r['failures']} failed", flush=True)
    base = results[0][1]["gen_tok_s"]
    print(f"\n{args.clients} clients, {args.seconds:g}s each; ratio vs none (same run):")
    for c, r in results[1:]:
        print(f"  {c.name:20} {r['gen_tok_s'] / base:5.2f}x  ({c.describe()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
