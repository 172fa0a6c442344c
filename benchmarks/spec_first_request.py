"""Where speculation's TTFT P99 went: the first request after a replica became ready.

For each config it starts a one-replica stack (``inferstack up --detach``, no gateway, greedy),
sends ``--requests`` streaming completions one after another (a copy prompt from the shipped
documents, where n-gram drafts match) and records each one's TTFT and e2e time; then stops it.
Configs: no speculation and ngram k=8, each with the supervisor's warm-up off and on
(``engine.warm_up``). Prints, per config, the first request's TTFT, the median TTFT of the others,
and their ratio (same run, same machine).

    .venv/bin/python benchmarks/spec_first_request.py --requests 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from inferstack.bench.datasets import BUNDLED_DOCUMENTS
from inferstack.process import free_port_block

CONFIGS = [("none", False), ("ngram", False), ("ngram", True), ("none", True)]


def _cli(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "inferstack", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"inferstack {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}")


def _one(url: str, model: str, prompt: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    ttft = None
    with httpx.stream("POST", f"{url}/v1/completions", timeout=120, json={
            "model": model, "prompt": prompt, "max_tokens": 64, "temperature": 0, "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if ttft is None and line.startswith("data: {"):
                ttft = time.perf_counter() - t0
    assert ttft is not None
    return ttft, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=6)
    args = p.parse_args()
    text = (BUNDLED_DOCUMENTS / "speculation.txt").read_text().split()
    prompts = [f"Repeat the following text exactly.\n\n{' '.join(text[i * 60:(i + 1) * 60])}\n\nRepeated text:\n"
               for i in range(args.requests)]
    rows = []
    for method, warm in CONFIGS:
        with tempfile.TemporaryDirectory() as state:
            env = dict(os.environ, INFERSTACK_STATE=state)
            port = free_port_block(1, start=19300)
            config = {"replicas": 1, "speculative": {"method": method}, "gateway": {"enabled": False},
                      "batch": {"enabled": False},
                      "engine": {"base_port": port, "warm_up": warm, "extra_args": [
                          "--override-generation-config", json.dumps({"temperature": 0.0})]}}
            path = Path(state) / "stack.yaml"
            path.write_text(yaml.safe_dump(config))
            print(f"== {method}, warm-up {'on' if warm else 'off'}: up", flush=True)
            _cli("up", "--detach", "--config", str(path), env=env)
            try:
                url = f"http://127.0.0.1:{port}"
                model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
                times = [_one(url, model, pr) for pr in prompts]
            finally:
                _cli("down", env=env)
        first, rest = times[0][0], statistics.median(t for t, _ in times[1:])
        rows.append((method, warm, first, rest))
        print(f"   TTFT per request (ms): {[round(t * 1000) for t, _ in times]}; "
              f"e2e (ms): {[round(e * 1000) for _, e in times]}", flush=True)
    print("\n== first request after ready vs the rest (same run)")
    for method, warm, first, rest in rows:
        print(f"{method:5} warm-up {'on ' if warm else 'off'}: first TTFT {first * 1000:6.0f} ms, median of the "
              f"rest {rest * 1000:5.0f} ms, ratio {first / rest:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
