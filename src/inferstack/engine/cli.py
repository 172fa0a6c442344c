"""``inferstack up | status | down``: run the local stack in the foreground or detached.

``up --detach`` re-runs ``up`` as a background supervisor in its own session (log in the state
dir), waits until the state file says ready or failed, and returns. ``down`` signals that
supervisor (which drains and stops everything) and then checks that no process it started is left.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from inferstack.batch.settings import BatchSettings
from inferstack.config import StackConfig, load_config
from inferstack.engine.metrics import fetch_figures
from inferstack.engine.speculative import SPEC_METHODS
from inferstack.engine.state import StateFile
from inferstack.engine.supervisor import Supervisor
from inferstack.envs.environments import engine_env_for, env_python
from inferstack.errors import InferstackError, ReplicaStartError
from inferstack.process import group_alive, log_tail, pid_alive, stop_process_group

__all__ = ["register"]

_DETACH_WAIT_S = 900.0


# `up` flags -> the stack-config key each overrides (None = flag not given).
_FLAG_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "replicas": ("replicas",),
    "spec": ("speculative", "method"),
    "spec_tokens": ("speculative", "num_speculative_tokens"),
    "spec_model": ("speculative", "model"),
    "base_port": ("engine", "base_port"),
    "max_model_len": ("engine", "max_model_len"),
    "kv_cache_gib": ("engine", "kv_cache_gib"),
    "gateway_port": ("gateway", "port"),
}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The nested config overrides the flags of `up` ask for."""
    values = {path: getattr(args, flag) for flag, path in _FLAG_KEYS.items()}
    if args.compiled:
        values[("engine", "enforce_eager")] = False
    if args.no_gateway:
        values[("gateway", "enabled")] = False
    if getattr(args, "no_batch", False):
        values[("batch", "enabled")] = False
    out: dict[str, Any] = {}
    for path, value in values.items():
        if value is None:
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _batch_settings(config: StackConfig, state: StateFile) -> BatchSettings | None:
    """The batch service's resolved settings, or None (disabled, or no gateway to route to it)."""
    if not (config.batch.enabled and config.gateway.enabled):
        return None
    from inferstack.batch.stack import resolve_batch

    host = config.gateway.listen_host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return resolve_batch(config.batch, f"http://{host}:{config.gateway.port}", state.run_dir)


def _batch_factory(batch: BatchSettings | None):  # type: ignore[no-untyped-def]
    if batch is None:
        return None
    from inferstack.batch.runtime import BatchService

    return lambda run_dir: BatchService(batch, run_dir=run_dir)


def _gateway_factory(config: StackConfig, batch: BatchSettings | None = None):  # type: ignore[no-untyped-def]
    """Envoy + EPP in front of the replicas, learning them from the supervisor's endpoints file;
    with ``batch``, Envoy also routes /v1/files and /v1/batches to the batch service."""
    if not config.gateway.enabled:
        return None
    # Imported here: a stack without a gateway never loads grpc.
    from inferstack.gateway.runtime import Gateway
    from inferstack.gateway.settings import GatewaySettings

    settings = GatewaySettings.model_validate(config.gateway.model_dump(exclude={"enabled"}))
    if batch is not None:
        from inferstack.batch.stack import gateway_with_batch

        settings = gateway_with_batch(settings, batch)
    return lambda endpoints_file, run_dir: Gateway(settings, endpoints_file=endpoints_file, run_dir=run_dir)


def _up(args: argparse.Namespace) -> int:
    config = load_config(args.config, _overrides(args))
    if config.autoscaling is not None:
        print(f"[up] note: the autoscaling: section shapes `inferstack render`'s HPA and `inferstack autoscale "
              f"simulate`; the local stack does not scale itself yet and runs {config.replicas} replica(s)",
              flush=True)
    state = StateFile()
    running = state.live()
    if running:
        raise InferstackError(
            f"a stack is already running (supervisor pid {running['supervisor_pid']}, "
            f"{running.get('base_url')}); stop it with `inferstack down` first"
        )
    if args.detach:
        return _up_detached(config, state)
    return _up_foreground(config, state, args.config)


def _up_foreground(config: StackConfig, state: StateFile, config_path: Path | None) -> int:
    engine_python = env_python(engine_env_for(config.engine.engine))
    batch = _batch_settings(config, state)
    supervisor = Supervisor(config, engine_python, state, config_path=config_path,
                            front_end_factory=_gateway_factory(config, batch),
                            batch_factory=_batch_factory(batch))
    stop_event = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop_event.set()  # only queue it; the loop below does the work

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        supervisor.start(should_stop=stop_event.is_set)
    except KeyboardInterrupt:
        state.remove()
        raise
    except InferstackError:
        state.write(supervisor.snapshot())  # keeps the error for a detached parent
        raise
    print(f"OpenAI API ready at {supervisor.base_url}  (model: {supervisor.model.served_name}, "
          f"speculative: {config.speculative.method}{', batch API on' if batch else ''}); Ctrl-C to stop",
          flush=True)
    try:
        supervisor.run(stop_event)
    finally:
        print("[down] draining and stopping replicas", flush=True)
        supervisor.stop()
        state.remove()
    return 0


def _up_detached(config: StackConfig, state: StateFile) -> int:
    run_dir = state.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "stack-config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    log_path = run_dir / "supervisor.log"
    state.remove()
    with open(log_path, "wb") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "inferstack", "up", "--config", str(config_file)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    print(f"[up] supervisor started: pid {child.pid}, log {log_path}", flush=True)
    deadline = time.monotonic() + _DETACH_WAIT_S
    shown = 0
    while time.monotonic() < deadline:
        data = state.read() or {}
        if data.get("state") == "ready" and data.get("supervisor_pid") == child.pid:
            print(f"OpenAI API ready at {data['base_url']}  (model: {data['model']}, "
                  f"speculative: {data['speculative']}{', batch API on' if data.get('batch') else ''}); "
                  "stop with `inferstack down`", flush=True)
            return 0
        code = child.poll()
        if code is not None:
            error = data.get("error") or f"the supervisor exited with code {code}"
            state.remove()
            raise ReplicaStartError(f"{error}\n(supervisor log: {log_path})",
                                    "" if data.get("error") else log_tail(log_path))
        # Echo the supervisor's progress lines as they come.
        lines = log_tail(log_path, 200).splitlines()
        for line in lines[shown:]:
            if line.startswith("[up]"):
                print(line, flush=True)
        shown = len(lines)
        time.sleep(0.5)
    stop_process_group(child.pid, 30)
    raise ReplicaStartError(f"the stack was not ready within {_DETACH_WAIT_S:.0f}s", log_tail(log_path))


def _status(args: argparse.Namespace) -> int:
    data = StateFile().live()
    if data is None:
        if args.json:
            print(json.dumps({"running": False, "base_url": None, "replicas": [], "gateway": None}))
        else:
            print("no stack is running (start one with `inferstack up --detach`)")
        return 1
    now = time.time()
    data["running"] = True
    for replica in data["replicas"]:
        figures = fetch_figures(replica["url"]) if replica["state"] == "ready" else None
        replica["metrics"] = figures.as_dict() if figures else None
        replica["uptime_s"] = round(now - replica["started_at"], 1) if replica.get("started_at") else None
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"base_url: {data['base_url']}   model: {data['model']}   speculative: {data['speculative']}"
          f"   supervisor pid {data['supervisor_pid']} ({data['state']})")
    print(f"{'NAME':5} {'URL':24} {'STATE':9} {'PID':>7} {'UPTIME':>7} {'RUN':>4} {'WAIT':>4} "
          f"{'KV%':>5} {'ACCEPT':>6} RESTARTS LOG")
    for r in data["replicas"]:
        m = r["metrics"] or {}
        accept = m.get("acceptance_rate")
        print(
            f"{r['name']:5} {r['url']:24} {r['state']:9} {r['pid'] or '-':>7} "
            f"{_fmt(r['uptime_s'], '.0f', 's'):>7} {_fmt(m.get('running'), '.0f'):>4} "
            f"{_fmt(m.get('waiting'), '.0f'):>4} {_fmt(_pct(m.get('kv_cache_usage')), '.1f'):>5} "
            f"{_fmt(_pct(accept), '.0f', '%'):>6} {r['restarts']:>8} {r['log']}"
        )
    gateway = data.get("gateway")
    if gateway:
        for name in ("envoy", "epp"):
            proc = gateway.get(name) or {}
            ports = ", ".join(f"{k} {v}" for k, v in proc.items() if k.endswith("port"))
            print(f"gateway {name:5} {proc.get('state', '-'):9} pid {proc.get('pid') or '-'}  {ports}  "
                  f"restarts {proc.get('restarts', 0)}  log {proc.get('log', '-')}")
    batch = data.get("batch")
    if batch:
        print(f"batch         {batch.get('state', '-'):9} pid {batch.get('pid') or '-'}  port {batch.get('port')}  "
              f"state {batch.get('state_dir')}  log {batch.get('log', '-')}")
    return 0


def _pct(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _down(args: argparse.Namespace) -> int:
    state = StateFile()
    data = state.read()
    if data is None:
        print("no stack is running")
        return 0
    supervisor_pid = data.get("supervisor_pid")
    if pid_alive(supervisor_pid):
        print(f"[down] stopping supervisor pid {supervisor_pid} (drains in-flight requests)", flush=True)
        os.kill(supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while pid_alive(supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid_alive(supervisor_pid):
            print(f"[down] supervisor did not stop in {args.timeout:.0f}s; killing", flush=True)
            os.kill(supervisor_pid, signal.SIGKILL)
    # Whatever the supervisor could not stop (it was killed, or crashed) is stopped here.
    gateway = data.get("gateway") or {}
    pids = [r.get("pid") for r in data.get("replicas", [])]
    pids += [(gateway.get(name) or {}).get("pid") for name in ("envoy", "epp")]
    pids.append((data.get("batch") or {}).get("pid"))
    leftovers = [pid for pid in pids if pid and group_alive(pid)]
    for pid in leftovers:
        stop_process_group(pid, 10)
    state.remove()
    print("[down] stopped" + (f" (cleaned up {len(leftovers)} leftover processes)" if leftovers else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser("up", help="start the local stack (vLLM replicas [+ gateway])")
    up.add_argument("--config", type=Path, help="stack config YAML (flags override it)")
    up.add_argument("--model", help="bundled name, local HF folder, or hub id org/name")
    up.add_argument("--replicas", type=int, help="number of vLLM replicas")
    up.add_argument("--spec", choices=SPEC_METHODS, help="speculative decoding method (default ngram)")
    up.add_argument("--spec-tokens", type=int, help="num_speculative_tokens (k)")
    up.add_argument("--spec-model", help="draft model (draft) or EAGLE head (eagle, eagle3)")
    up.add_argument("--base-port", type=int, help="first replica port (default 8101)")
    up.add_argument("--max-model-len", type=int, help="context length per request (default 2048)")
    up.add_argument("--kv-cache-gib", type=int, help="KV cache per replica in GiB (default 1)")
    up.add_argument("--compiled", action="store_true", help="torch.compile (slower start) instead of eager")
    up.add_argument("--gateway-port", type=int, help="Envoy listener port (default 8080)")
    up.add_argument("--no-gateway", action="store_true", help="serve from the replicas directly")
    up.add_argument("--no-batch", action="store_true", help="no batch service (/v1/files, /v1/batches)")
    up.add_argument("--detach", action="store_true", help="run in the background; stop with `down`")
    up.set_defaults(func=_up)

    status = subparsers.add_parser("status", help="show the running stack")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    down = subparsers.add_parser("down", help="stop the stack started with --detach")
    down.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a clean stop")
    down.set_defaults(func=_down)
