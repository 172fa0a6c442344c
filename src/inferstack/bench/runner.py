"""Run one benchmark: checks, inference-perf in its own venv, /metrics sampling, attribution.

Order (every check happens before load starts): benchmark interpreter exists -> target reachable
and serving the model -> tokenizer folder exists -> dataset usable -> replicas expose vLLM
metrics. Then inference-perf runs as a child in its own session (so a terminal Ctrl-C reaches
only us); we forward one SIGINT to it, which makes it stop the current stage and still write
the reports of the stages it finished; the run is then marked ``interrupted``.

Invariants: the child, the log reader, the progress printer and the sampler are always stopped
before :func:`run_bench` returns or raises; ``run.json`` always ends in a final status.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from inferstack import __version__
from inferstack.bench.attribution import attribute, series_value
from inferstack.bench.interpreter import INFERENCE_PERF_VERSION, bench_python
from inferstack.bench.ipconfig import build_config, write_config
from inferstack.bench.manifest import RunFiles, RunManifest, save_manifest
from inferstack.bench.progress import StageTracker, StageWindow
from inferstack.bench.sampler import KEPT_METRICS, MetricsSampler, read_samples
from inferstack.engine.metrics import parse_series
from inferstack.bench.settings import BenchSettings
from inferstack.bench.target import default_tokenizer, probe_metrics, probe_target
from inferstack.errors import ConfigError, InferstackError, SetupError
from inferstack.process import SupervisedProcess
from inferstack.wire import VllmMetric

__all__ = ["run_bench", "finalize_run"]

logger = logging.getLogger(__name__)

INTERRUPT_GRACE_S = 60.0
TERMINATE_GRACE_S = 10.0


def _prepare_run_dir(run_dir: Path) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"--output '{run_dir}' exists and is not empty; choose a new run directory")
    run_dir.mkdir(parents=True, exist_ok=True)


def _detect_spec_method(metrics_text: str | None) -> str:
    if metrics_text is None:
        return "unknown"
    series = parse_series(metrics_text, KEPT_METRICS)
    return "speculative (method unknown)" if VllmMetric.SPEC_DRAFTS.total in series else "none"


class _Progress:
    """Prints a live line per stage: stage i/N, rate, elapsed, successes (server) / errors."""

    def __init__(self, tracker: StageTracker, sampler: MetricsSampler, settings: BenchSettings, out: TextIO):
        self.tracker, self.sampler, self.settings, self.out = tracker, sampler, settings, out
        self._baseline: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-progress", daemon=True)

    def _succeeded(self) -> float:
        latest = list(self.sampler.latest.values())
        return sum(series_value(s, VllmMetric.REQUEST_SUCCESS.total) for s in latest)

    def line(self, w: StageWindow, now: float) -> str:
        base = self._baseline.setdefault(w.stage, self._succeeded())
        unit = "concurrency" if self.settings.profile == "concurrency" else "req/s"
        if w.stage < 0:
            name, rate = "saturation probe", f"{self.settings.probe_requests} requests burst"
        else:
            name = f"stage {w.stage + 1}/{self.tracker.total_stages or '?'}"
            rate = f"{w.rate:g} {unit}" if w.rate is not None else "rate ?"
        end = w.end if w.end is not None else now
        state = "" if w.status == "running" else f" {w.status}"
        return (
            f"[bench] {name} {rate} elapsed {end - w.start:5.1f}s"
            f" ok {self._succeeded() - base:.0f} (server) errors {self.tracker.errors}{state}"
        )

    def stage_event(self, w: StageWindow) -> None:
        if w.status == "running":
            self._baseline[w.stage] = self._succeeded()
        print(self.line(w, time.time()), file=self.out, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.progress_period_s):
            w = self.tracker.current()
            if w is not None:
                print(self.line(w, time.time()), file=self.out, flush=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def finalize_run(run_dir: Path, windows: list[StageWindow], files: RunFiles | None = None) -> int:
    """Write stages.json and the per-stage server metrics; returns the number of finished stages."""
    files = files or RunFiles()
    (run_dir / files.stages).write_text(
        json.dumps([w.model_dump() for w in windows], indent=2), encoding="utf-8"
    )
    samples_path = run_dir / files.server_samples
    records = list(read_samples(samples_path)) if samples_path.exists() else []
    per_stage = attribute(records, windows)
    (run_dir / files.server_per_stage).write_text(
        json.dumps([s.model_dump() for s in per_stage], indent=2), encoding="utf-8"
    )
    return sum(1 for w in windows if w.stage >= 0 and w.status == "completed")


def _print_stage_results(run_dir: Path, out: TextIO) -> None:
    """Final line per stage, with inference-perf's own success/failure counts."""
    from inferstack.bench.results import load_run  # local: results imports the manifest we write

    run = load_run(run_dir)
    for s in run.stages:
        ttft = "-" if s.ttft.p50 is None else f"{s.ttft.p50 * 1000:.0f} ms"
        flag = "" if s.trustworthy else " (NOT trustworthy: see report)"
        print(
            f"[bench] stage {s.stage + 1}/{len(run.stages)} {s.requested_rate or 0:g}: {s.successes} ok, "
            f"{s.failures} failed, {s.output_tokens_per_s:.1f} out tok/s, TTFT P50 {ttft}{flag}",
            file=out,
            flush=True,
        )


def run_bench(settings: BenchSettings, run_dir: Path, out: TextIO = sys.stderr) -> RunManifest:
    """Run inference-perf per ``settings`` into ``run_dir``; returns the final manifest."""
    python = bench_python()
    run_dir = run_dir.resolve()
    _prepare_run_dir(run_dir)
    info = probe_target(settings.target, settings.model)
    tokenizer = (settings.tokenizer or default_tokenizer(info.model)).expanduser()
    if not (tokenizer / "tokenizer_config.json").exists() and not (tokenizer / "tokenizer.json").exists():
        raise ConfigError(f"--tokenizer '{tokenizer}' is not a tokenizer folder (no tokenizer.json)")
    metrics_urls: list[str] = []
    first_metrics: str | None = None
    for url in settings.metrics_urls or (info.base_url,):
        text = probe_metrics(url)
        if text is None:
            if settings.metrics_urls:
                raise ConfigError(f"--metrics-url '{url}' exposes no vLLM /metrics")
            logger.warning("target %s exposes no vLLM /metrics; pass --metrics-url per replica", url)
            continue
        metrics_urls.append(url.rstrip("/"))
        first_metrics = first_metrics or text
    files = RunFiles()
    config = build_config(settings, run_dir, info.model, tokenizer)
    config_path = write_config(config, run_dir / files.inference_perf_config)
    spec = settings.spec_method or _detect_spec_method(first_metrics)
    manifest = RunManifest(
        label=settings.label or f"{settings.profile} {spec}",
        status="running",
        started_at=time.time(),
        target=info.base_url,
        model=info.model,
        tokenizer=str(tokenizer),
        metrics_urls=metrics_urls,
        spec_method=spec,
        routing=settings.routing or ("direct" if metrics_urls == [info.base_url] else "unknown"),
        profile=settings.profile,
        dataset=settings.dataset,
        settings=settings.model_dump(mode="json"),
        versions={"inferstack": __version__, "inference-perf": INFERENCE_PERF_VERSION, "vllm": info.server_version},
        files=files,
    )
    save_manifest(manifest, run_dir)

    tracker = StageTracker(settings.stage_levels())
    sampler = MetricsSampler(metrics_urls, run_dir / files.server_samples, settings.sample_interval_s)
    progress = _Progress(tracker, sampler, settings, out)
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="120")
    # The console script, run by the venv's interpreter (works whether or not bin/ is executable).
    script = python.parent / "inference-perf"
    cmd = [str(python), str(script), "--config_file", str(config_path.resolve()), "--log-level", "INFO"]
    logger.info("starting inference-perf: %s", " ".join(cmd))

    def feed(line: str) -> None:
        w = tracker.feed(line)
        if w is not None:
            progress.stage_event(w)

    # SIGINT first on stop: inference-perf then writes the finished stages' reports
    child = SupervisedProcess("inference-perf", cmd, run_dir / files.inference_perf_log, env=env, cwd=run_dir,
                              on_line=feed, interrupt_timeout_s=INTERRUPT_GRACE_S,
                              stop_timeout_s=TERMINATE_GRACE_S)
    interrupted = False
    try:
        child.start()
    except OSError as exc:
        manifest.status, manifest.finished_at = "failed", time.time()
        save_manifest(manifest, run_dir)
        raise SetupError(f"cannot start inference-perf ({cmd[1]}): {exc}; run `make setup`") from exc
    sampler.start()
    progress.start()
    try:
        rc = child.wait()
    except KeyboardInterrupt:
        interrupted = True
        print("[bench] interrupted: stopping inference-perf; finished stages are kept", file=out, flush=True)
        child.stop()
        rc = child.wait()
    finally:
        if child.exit_code() is None:  # an unexpected error on our side: never leave it running
            child.stop()
        progress.stop()
        sampler.stop()
    logger.info("inference-perf (pid %s) exited with %d", child.pid, rc)

    windows = tracker.snapshot()
    manifest.stages_finished = finalize_run(run_dir, windows, files)
    manifest.return_code = rc
    manifest.finished_at = time.time()
    reports = run_dir / files.inference_perf_reports
    has_reports = reports.is_dir() and any(reports.glob("stage_*_lifecycle_metrics.json"))
    if interrupted:
        manifest.status = "interrupted"
    else:
        manifest.status = "completed" if rc == 0 and has_reports else "failed"
    save_manifest(manifest, run_dir)
    if has_reports:
        _print_stage_results(run_dir, out)
    if interrupted:
        print(
            f"[bench] interrupted: kept {manifest.stages_finished} finished stage(s) in {run_dir}",
            file=out,
            flush=True,
        )
    elif manifest.status == "failed":
        tail = "".join((run_dir / files.inference_perf_log).read_text(errors="replace").splitlines(True)[-15:])
        raise InferstackError(
            f"inference-perf exited with code {rc} and {'some' if has_reports else 'no'} stage reports; "
            f"see {run_dir / files.inference_perf_log}\n--- last lines ---\n{tail.rstrip()}"
        )
    return manifest
