"""Serving numbers for the local stack (prints them; not a pass/fail test).

1. replica time-to-ready: eager vs compiled (torch.compile) mode;
2. single-stream output tok/s on a copy-heavy prompt: no speculation vs speculative configs (ngram
   k / lookup windows, suffix decoding; the ``tune-spec`` candidate syntax), with the acceptance
   rate and mean acceptance length from the replica's own counters; all measured in this run, one
   replica at a time on the same cores, same prompts (each replica warmed up by the supervisor);
3. `inferstack up --detach` (2 replicas + gateway) to the first answer through the gateway.

    .venv/bin/python benchmarks/serving_spec_decode.py [--skip-compiled] [--skip-up] [--tokens 256] \
        [--variants ngram:k=8 ngram:k=12 suffix:k=24]
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

from inferstack.engine.metrics import fetch_figures
from inferstack.envs.environments import ENGINE_ENV, env_python
from inferstack.errors import ConfigError
from inferstack.spectune.candidates import Candidate, parse_candidates
from inferstack.stack.config import StackConfig
from inferstack.stack.state import StateFile
from inferstack.stack.supervisor import Supervisor

DOCUMENT = (
    "The river town of Elmford sits where two valleys meet. Every spring the snow on the northern "
    "hills melts, and the water rises until it reaches the stone steps of the old mill. The people "
    "of Elmford have learned to live with the flood: they keep their boats tied to the fences, they "
    "store their grain on the upper floors, and they plant their gardens on the terraces above the "
    "road. In the summer the river falls again, the fields turn green, and the market in the square "
    "fills with apples, cheese, honey and wool. Travellers who come for the market often stay for "
    "the music, because on the last Saturday of every month the town band plays in front of the "
    "library until the lamps are lit."
)
PROMPTS = [
    f"Copy the following text exactly, word for word, without any changes.\n\n{DOCUMENT}",
    f"Here is a paragraph:\n\n{DOCUMENT}\n\nRepeat the paragraph above exactly as written.",
]



def start_replica(spec: dict, eager: bool, port: int, state_root: Path,
                  dtype: str = "default") -> tuple[Supervisor, float]:
    config = StackConfig.model_validate({
        "replicas": 1, "speculative": spec,
        "engine": {"base_port": port, "enforce_eager": eager, "ready_timeout_s": 900, "dtype": dtype},
        "gateway": {"enabled": False},
    })
    state = StateFile(state_root / f"{spec['method']}-{time.monotonic_ns()}" / "stack.json")
    supervisor = Supervisor(config, env_python(ENGINE_ENV), state)
    began = time.monotonic()
    supervisor.start(progress=lambda line: None)
    return supervisor, time.monotonic() - began


def one_request(url: str, model: str, prompt: str, tokens: int) -> tuple[str, int, float, float]:
    """Stream one greedy chat completion: (text, output tokens, TTFT s, end-to-end s)."""
    began = time.perf_counter()
    first = None
    text, usage = [], 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=600, json={
        "model": model, "max_tokens": tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": prompt}]}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    first = first or time.perf_counter()
                    text.append(choice["delta"]["content"])
    end = time.perf_counter()
    return "".join(text), usage, (first or end) - began, end - began


def single_stream(url: str, model: str, tokens: int, repeats: int) -> dict:
    e2e_rates, decode_rates, ttfts, outputs = [], [], [], []
    before = fetch_figures(url)
    for _ in range(repeats):
        for prompt in PROMPTS:
            text, n, ttft, e2e = one_request(url, model, prompt, tokens)
            e2e_rates.append(n / e2e)
            # Tokens after the first, over the time after the first: the decode speed itself.
            decode_rates.append((n - 1) / (e2e - ttft) if n > 1 and e2e > ttft else 0.0)
            ttfts.append(ttft)
            outputs.append(text)
    after = fetch_figures(url)
    drafted = after.spec_draft_tokens - before.spec_draft_tokens
    accepted = after.spec_accepted_tokens - before.spec_accepted_tokens
    drafts = after.spec_drafts - before.spec_drafts
    return {
        "tok_s": statistics.median(e2e_rates),
        "decode_tok_s": statistics.median(decode_rates),
        "ttft_s": statistics.median(ttfts),
        "acceptance": accepted / drafted if drafted else None,
        "mean_accept_len": 1 + accepted / drafts if drafts else None,
        "outputs": outputs,
    }


def measure_up_to_first_answer(state_root: Path) -> float:
    env = dict(os.environ, INFERSTACK_STATE=str(state_root / "up"))
    cli = [sys.executable, "-m", "inferstack"]
    began = time.monotonic()
    subprocess.run([*cli, "up", "--detach", "--replicas", "2"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    try:
        r = httpx.post("http://127.0.0.1:8080/v1/chat/completions", timeout=120, json={
            "model": "smollm2-135m-instruct", "max_tokens": 16,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        r.raise_for_status()
        return time.monotonic() - began
    finally:
        subprocess.run([*cli, "down"], env=env, check=False, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="max_tokens per request")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the prompts")
    parser.add_argument("--port", type=int, default=8151)
    parser.add_argument("--variants", nargs="+", default=["ngram:k=4,max=4", "ngram:k=8", "ngram:k=12",
                                                          "ngram:k=16", "suffix:k=16", "suffix:k=24"],
                        help="speculative configs (tune-spec syntax: METHOD[:k=K,min=A,max=B,...])")
    parser.add_argument("--dtype", default="default", choices=["default", "bfloat16", "float32"],
                        help="default: the stack's (float32 on CPU), whose greedy outputs match exactly")
    parser.add_argument("--skip-compiled", action="store_true", help="skip the ~150 s compiled start")
    parser.add_argument("--skip-up", action="store_true", help="skip the `up` to first answer timing")
    args = parser.parse_args()
    model = "smollm2-135m-instruct"
    root = Path(tempfile.mkdtemp(prefix="inferstack-bench-"))

    print(f"single stream, copy-heavy prompts, max_tokens {args.tokens}, {args.repeats} passes, "
          f"{args.dtype}", flush=True)
    results = []
    baseline_ready = None
    candidates: list[Candidate] = parse_candidates(args.variants)
    for candidate in candidates:
        try:
            supervisor, ready_s = start_replica(candidate.section(), True, args.port, root, args.dtype)
        except ConfigError as exc:  # e.g. suffix without its compiled suffix tree
            print(f"  {candidate.name:24} skipped: {exc}", flush=True)
            continue
        try:
            url = supervisor.members[0].replica.spec.url
            result = single_stream(url, model, args.tokens, args.repeats)
        finally:
            supervisor.stop(drain=False)
        baseline_ready = baseline_ready or ready_s
        results.append((candidate, ready_s, result))
        label = candidate.name
        acc = result["acceptance"]
        print(f"  {label:24} ready {ready_s:5.1f}s  {result['tok_s']:6.1f} tok/s e2e  "
              f"{result['decode_tok_s']:6.1f} tok/s decode  TTFT {result['ttft_s'] * 1000:4.0f} ms  "
              f"acceptance {'-' if acc is None else f'{acc:.0%}'}  "
              f"mean accepted length {result['mean_accept_len'] or 0:.2f}", flush=True)

    base = results[0][2]
    print("\nspeedup vs no speculation (same run, same prompts):")
    for candidate, _, result in results[1:]:
        same = result["outputs"] == base["outputs"]
        print(f"  {candidate.describe()}: "
              f"{result['tok_s'] / base['tok_s']:.2f}x e2e, {result['decode_tok_s'] / base['decode_tok_s']:.2f}x "
              f"decode  (greedy outputs identical: {same})")
    if args.dtype == "bfloat16":
        print("  (in bf16 a near-tie can round differently in the batched verify step; --dtype float32 "
              "gives identical outputs)")
    best = max(results[1:], key=lambda r: r[2]["tok_s"])
    target = best[2]["tok_s"] / base["tok_s"]
    decode = best[2]["decode_tok_s"] / base["decode_tok_s"]
    print(f"  best (by e2e): {best[0].name}, {target:.2f}x e2e, {decode:.2f}x decode (target >= 3x: "
          f"{'met' if target >= 3 else 'NOT met'} e2e, {'met' if decode >= 3 else 'NOT met'} decode)")

    print("\nreplica time-to-ready:")
    print(f"  eager:    {baseline_ready:.1f}s")
    if not args.skip_compiled:
        supervisor, compiled_s = start_replica({"method": "none"}, eager=False, port=args.port, state_root=root)
        supervisor.stop(drain=False)
        print(f"  compiled: {compiled_s:.1f}s  ({compiled_s / baseline_ready:.1f}x eager)")
    if not args.skip_up:
        first = measure_up_to_first_answer(root)
        print(f"\n`inferstack up --detach --replicas 2` to first answer via the gateway (warm): {first:.1f}s "
              f"(target <= 45 s: {'met' if first <= 45 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
