"""``inferstack tune-spec``: measure candidate speculative configs on the user's data, same run.

For each candidate in turn (the baseline ``none`` first): a detached one-replica stack with that
``speculative:`` section (``inferstack up --detach`` in a private state directory, free ports, no
gateway, batch, autoscaling or LoRA: speculation is a per-replica setting and the replica is
measured directly), then ``inferstack bench`` against it, then ``inferstack down``. The baseline runs
a linear sweep (saturation probe, then ``loads`` stages rising linearly to saturation); every other
candidate replays exactly the baseline's stage rates, so all are compared at the same offered load.
A candidate that fails to start is recorded with its log tail and the tuning goes on. Ctrl-C stops
the candidate being measured and keeps what finished: the report and recommendation cover the
candidates measured so far.

Layout of ``--output DIR``: ``configs/NAME.yaml`` (the stack config each candidate ran),
``runs/NAME/`` (bench run directories), ``state/NAME/`` (stack logs), ``tuning.json`` (the
evidence), ``index.html`` (report), ``recommended.yaml`` (the base config with the winner's
``speculative:`` section: for ``inferstack up --config`` and ``inferstack render --spec-from``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from inferstack.bench.results import load_run
from inferstack.bench.runner import run_bench
from inferstack.bench.settings import BenchSettings
from inferstack.bench.stack import StackDefaults, local_stack_defaults
from inferstack.configfile import read_yaml_mapping
from inferstack.errors import ConfigError
from inferstack.process import free_port_block
from inferstack.spectune.candidates import Candidate, TuningPlan
from inferstack.spectune.recommend import Measured, Recommendation, measured_from_run, recommend
from inferstack.spectune.report import write_html
from inferstack.stack.config import StackConfig, load_config
from inferstack.stack.state import StateFile

__all__ = ["TuneOptions", "TuneOutcome", "load_base", "measurement_config", "recommended_config", "tune"]

_UP_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class TuneOptions:
    output: Path
    base: dict[str, Any]  # the user's stack config (a mapping as in the YAML file)
    plan: TuningPlan
    dataset: str = "documents"
    temperature: float | None = None  # decoding temperature, applied to measurement and recommendation


@dataclass
class TuneOutcome:
    measured: list[Measured]
    recommendation: Recommendation | None
    interrupted: bool


def _with_temperature(config: dict[str, Any], temperature: float | None) -> dict[str, Any]:
    if temperature is None:
        return config
    engine = dict(config.get("engine") or {})
    engine["extra_args"] = [*engine.get("extra_args", []), "--override-generation-config",
                            json.dumps({"temperature": temperature})]
    return {**config, "engine": engine}


def measurement_config(base: dict[str, Any], candidate: Candidate, temperature: float | None,
                       base_port: int) -> dict[str, Any]:
    """The stack config one candidate is measured with: one replica, served directly."""
    config = {k: v for k, v in base.items() if k not in ("autoscaling", "replicas")}
    config = _with_temperature(config, temperature)
    config.update(replicas=1, speculative=candidate.section(),
                  gateway={"enabled": False}, batch={"enabled": False}, lora={"enabled": False})
    config["engine"] = {**config.get("engine", {}), "base_port": base_port}
    return config


def recommended_config(base: dict[str, Any], winner: Candidate, temperature: float | None) -> dict[str, Any]:
    """The user's config with the winner's ``speculative:`` section (and the measured temperature)."""
    return {**_with_temperature(base, temperature), "speculative": winner.section()}


def _cli(args: list[str], state_dir: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, INFERSTACK_STATE=str(state_dir))
    return subprocess.run([sys.executable, "-m", "inferstack", *args], env=env, text=True, timeout=timeout_s,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _down(state_dir: Path) -> None:
    _cli(["down"], state_dir, 180.0)


def _bench_settings(opts: TuneOptions, target: StackDefaults, candidate: Candidate,
                    rates: tuple[float, ...]) -> BenchSettings:
    plan = opts.plan
    common: dict[str, Any] = dict(
        duration_s=plan.stage_s, dataset=opts.dataset, target=target.target, model=target.model,
        tokenizer=target.tokenizer, metrics_urls=target.metrics_urls, label=candidate.name,
        spec_method=candidate.describe(), routing="direct (one replica)", stage_interval_s=1.0)
    if not rates:  # the baseline: probe saturation, then stages rising linearly to it
        return BenchSettings(profile="linear-sweep", stages=plan.loads, probe_requests=plan.probe_requests,
                             **common)
    return BenchSettings(profile="constant", rates=rates, **common) if len(rates) > 1 else \
        BenchSettings(profile="constant", rate=rates[0], stages=1, **common)


def _measure(opts: TuneOptions, candidate: Candidate, index: int, rates: tuple[float, ...],
             say: Callable[[str], None]) -> tuple[Measured, bool]:
    """Start, bench and stop one candidate; (its measurements, interrupted?)."""
    out, plan = opts.output, opts.plan
    state_dir = out / "state" / candidate.name
    config = measurement_config(opts.base, candidate, opts.temperature, free_port_block(1, start=19900))
    config_path = out / "configs" / f"{candidate.name}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    measured = Measured(candidate.name, candidate.describe(), candidate.section())
    head = f"[tune-spec {index + 1}/{len(plan.candidates)}] {candidate.name} ({candidate.describe()})"
    say(f"{head}: starting a replica")
    t0 = time.monotonic()
    try:
        up = _cli(["up", "--detach", "--config", str(config_path)], state_dir, _UP_TIMEOUT_S)
        if up.returncode != 0:
            measured.error = "did not start: " + "\n".join(up.stdout.strip().splitlines()[-12:])
            say(f"{head}: {measured.error}")
            return measured, False
        target = local_stack_defaults(StateFile(state_dir / "stack.json").read())
        say(f"{head}: ready after {time.monotonic() - t0:.0f}s; {plan.loads} loads x {plan.stage_s}s"
            + (f" at {', '.join(f'{r:g}' for r in rates)} req/s" if rates else " (linear sweep from a saturation probe)"))
        run_dir = out / "runs" / candidate.name
        manifest = run_bench(_bench_settings(opts, target, candidate, rates), run_dir)
        interrupted = manifest.status == "interrupted"
        if manifest.status != "completed":
            measured.error = f"benchmark {manifest.status} after {manifest.stages_finished} stage(s)"
        if manifest.stages_finished:
            measured.points = measured_from_run(candidate.name, candidate.describe(), candidate.section(),
                                                load_run(run_dir)).points
        return measured, interrupted
    except KeyboardInterrupt:
        measured.error = "interrupted"
        return measured, True
    finally:
        say(f"{head}: stopping the replica")
        _down(state_dir)


def _say(line: str) -> None:
    print(line, flush=True)  # between the benchmark's own progress lines, in order


def tune(opts: TuneOptions, say: Callable[[str], None] = _say) -> TuneOutcome:
    """Measure every candidate of the plan, write the report, the evidence and the recommendation."""
    out = opts.output
    if (out / "runs").exists() and any((out / "runs").iterdir()):
        raise ConfigError(f"--output '{out}' already holds a tuning run; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    say(f"[tune-spec] plan: {opts.plan.describe()}; dataset {opts.dataset}; output {out}")
    measured: list[Measured] = []
    rates: tuple[float, ...] = ()
    interrupted = False
    for i, candidate in enumerate(opts.plan.candidates):
        try:
            m, interrupted = _measure(opts, candidate, i, rates, say)
        except KeyboardInterrupt:
            interrupted = True
            break
        measured.append(m)
        if i == 0:
            if not m.points:
                say("[tune-spec] the baseline (none) could not be measured: nothing to compare against")
                break
            rates = tuple(round(p.rate, 3) for p in m.points)
        if interrupted:
            say("[tune-spec] interrupted: reporting what finished")
            break
    recommendation = None
    if measured and measured[0].points:
        recommendation = recommend(measured[0], measured[1:])
    _write_outputs(opts, measured, recommendation, interrupted)
    return TuneOutcome(measured, recommendation, interrupted)


def _write_outputs(opts: TuneOptions, measured: list[Measured], rec: Recommendation | None,
                   interrupted: bool) -> None:
    out = opts.output
    by_name = {c.name: c for c in opts.plan.candidates}
    evidence = {
        "plan": {"candidates": [c.name for c in opts.plan.candidates], "loads": opts.plan.loads,
                 "stage_s": opts.plan.stage_s, "left_out": opts.plan.dropped},
        "dataset": opts.dataset, "temperature": opts.temperature, "interrupted": interrupted,
        "measured": [asdict(m) for m in measured],
        "recommendation": asdict(rec) if rec else None,
    }
    (out / "tuning.json").write_text(json.dumps(evidence, indent=1))
    run_dirs = [out / "runs" / m.name for m in measured if m.points]
    write_html(out / "index.html", measured, rec, opts.plan, opts.dataset, run_dirs, interrupted)
    if rec is None:
        return
    config = recommended_config(opts.base, by_name[rec.best], opts.temperature)
    StackConfig.model_validate(config)  # what `up --config` will load
    header = (f"# inferstack tune-spec: {rec.summary}\n# evidence: {out / 'index.html'}\n"
              f"# use: inferstack up --config {out / 'recommended.yaml'}\n")
    (out / "recommended.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))


def load_base(path: Path | None) -> dict[str, Any]:
    """The user's stack config as a mapping (validated as `up` does: a bad file fails here, before
    anything starts); {} without a file."""
    if path is None:
        return {}
    load_config(path)
    return read_yaml_mapping(path, "config file")
