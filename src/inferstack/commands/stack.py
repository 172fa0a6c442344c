"""``inferstack up | status | down | scale | reconfigure``: run the local stack and change it.

``up --detach`` re-runs ``up`` as a background supervisor in its own session (log in the state
dir), waits until the state file says ready or failed, and returns. ``down`` signals that
supervisor (which drains and stops everything) and then checks that no process it started is left.
``scale`` and ``reconfigure`` queue a request for the running supervisor (``stack.control``) and
wait, reading the state file, until the stack has converged on it.
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

from inferstack.auth import load_key_file, new_key
from inferstack.autoscale.policy import AutoscalingPolicy
from inferstack.batch.settings import BatchSettings
from inferstack.configfile import read_yaml_mapping
from inferstack.engine.cpus import available_cores
from inferstack.engine.metrics import fetch_figures
from inferstack.engine.spec_support import resolve_speculation
from inferstack.engine.speculative import SPEC_METHODS
from inferstack.envs.environments import engine_env_for, env_python
from inferstack.errors import ConfigError, InferstackError, ReplicaStartError
from inferstack.gateway.status import (FlowControlStatus, GatewayStatus, epp_metrics_pages, picker_name,
                                      read_flow_control)
from inferstack.models.resolve import resolve_model
from inferstack.process import group_alive, log_tail, pid_alive, stop_process_group
from inferstack.stack.config import StackConfig, load_config
from inferstack.stack.control import submit_request
from inferstack.stack.state import StateFile
from inferstack.stack.status import ControlAnswer, StackStatus

__all__ = ["register", "register_adapter_commands", "with_autoscaling"]

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
    "pickers": ("gateway", "pickers"),
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
    if getattr(args, "lora", False):
        values[("lora", "enabled")] = True
    if getattr(args, "auth_file", None):
        values[("auth", "file")] = args.auth_file
    if getattr(args, "insecure", False):
        values[("gateway", "insecure")] = True
    if getattr(args, "monitoring", False):
        values[("monitoring", "enabled")] = True
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

    gw = config.gateway
    host = "127.0.0.1" if gw.listen_host in ("0.0.0.0", "::", "") else gw.listen_host
    taken = {gw.port, gw.admin_port, gw.epp.grpc_port, gw.epp.metrics_port}
    batch = config.batch
    if config.auth is not None:  # its callers' keys; its own to the gateway, acting for each batch's tenant
        batch = batch.model_copy(update={"auth_file": config.auth.file, "gateway_key_file": _service_key_path(state)})
    return resolve_batch(batch, f"http://{host}:{gw.port}", state.run_dir, taken)


def _service_key_path(state: StateFile) -> Path:
    return state.run_dir / "service-key"


def _write_service_key(state: StateFile) -> None:
    """A fresh key for the stack's own batch service, readable by this user only; the picker lets
    its holder name the tenant it acts for."""
    path = _service_key_path(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(new_key() + "\n")


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

    data = config.gateway.model_dump(exclude={"enabled"})
    if config.auth is not None:
        data["epp"]["auth_file"] = config.auth.file
        if batch is not None:
            data["epp"]["service_key_file"] = batch.gateway_key_file
    settings = GatewaySettings.model_validate(data)
    if batch is not None:
        from inferstack.batch.stack import gateway_with_batch

        settings = gateway_with_batch(settings, batch)
    return lambda endpoints_file, run_dir: Gateway(settings, endpoints_file=endpoints_file, run_dir=run_dir)


def with_kv_events(config: StackConfig, run_dir: Path) -> StackConfig:
    """With ``gateway.epp.kv_events.enabled``: the served model's folder as the picker's tokenizer,
    and the replicas' event sockets as Unix sockets in the run dir (private to this machine)."""
    kv = config.gateway.epp.kv_events
    if not (config.gateway.enabled and kv.enabled):
        return config
    tokenizer = kv.tokenizer
    if tokenizer is None:
        source = Path(resolve_model(config.model, config.served_model_name).source)
        if not (source / "tokenizer.json").exists():
            raise ConfigError(f"gateway.epp.kv_events needs the model's tokenizer.json in a local folder; "
                              f"{source} has none: set gateway.epp.kv_events.tokenizer to a folder with it")
        tokenizer = source
    ipc_dir = kv.ipc_dir or run_dir / "kv-events"
    longest = str(ipc_dir / f"kv-{config.engine.base_port + 63}.replay")
    if len(longest) > 100:  # a Unix socket's path holds 107 bytes
        raise ConfigError(f"gateway.epp.kv_events: the run dir's socket paths are too long for Unix sockets "
                          f"({len(longest)} > 100 characters: {longest}); set gateway.epp.kv_events.ipc_dir "
                          "to a shorter folder")
    ipc_dir.mkdir(parents=True, exist_ok=True)
    data = config.model_dump(mode="json")
    data["gateway"]["epp"]["kv_events"].update(tokenizer=str(tokenizer), ipc_dir=str(ipc_dir))
    return StackConfig.model_validate(data)


def _monitoring_factory(config: StackConfig, batch: BatchSettings | None):  # type: ignore[no-untyped-def]
    """Prometheus scraping the stack, and the port of the supervisor's own /metrics (chosen free)."""
    if not config.monitoring.enabled:
        return None
    from inferstack.monitoring import Prometheus, ScrapeTargets
    from inferstack.process import free_port

    gw = config.gateway
    supervisor_port = free_port(avoid={config.monitoring.port})

    def make(replicas_file: Path, run_dir: Path) -> Prometheus:
        targets = ScrapeTargets(
            replicas_file=replicas_file, supervisor=f"127.0.0.1:{supervisor_port}",
            pickers=tuple(f"127.0.0.1:{port}" for _, port in gw.picker_ports()) if gw.enabled else (),
            envoy_admin=f"127.0.0.1:{gw.admin_port}" if gw.enabled else None,
            batch=f"127.0.0.1:{batch.port}" if batch is not None else None)
        return Prometheus(config.monitoring, targets, run_dir)

    return make, supervisor_port


def with_autoscaling(config: StackConfig, autoscale: bool, min_replicas: int | None,
                     max_replicas: int | None) -> StackConfig:
    """The config with the autoscaling policy `up --autoscale [--min A] [--max B]` asks for: the
    config's own section, or else the default policy with one replica per core at most."""
    if not autoscale and config.autoscaling is None:
        if min_replicas is not None or max_replicas is not None:
            raise ConfigError("--min/--max bound the autoscaler: add --autoscale (or an autoscaling: "
                              "section to the config)")
        return config
    data = config.autoscaling.model_dump() if config.autoscaling is not None else {
        "max_replicas": max(1, len(available_cores()))}
    if min_replicas is not None:
        data["min_replicas"] = min_replicas
    if max_replicas is not None:
        data["max_replicas"] = max_replicas
    try:
        policy = AutoscalingPolicy.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"autoscaling: {exc}") from exc
    return config.model_copy(update={"autoscaling": policy})


def _up(args: argparse.Namespace) -> int:
    config = load_config(args.config, _overrides(args))
    config = with_autoscaling(config, args.autoscale, args.min, args.max)
    if config.autoscaling is not None:
        p = config.autoscaling
        print(f"[up] autoscaling {p.min_replicas}..{p.max_replicas} replicas on {p.label()} "
              f"(sync every {p.sync_period_s:g}s)", flush=True)
    if config.auth is not None:
        load_key_file(config.auth.file)  # a bad key file fails here, before anything starts
    state = StateFile()
    running = state.live()
    if running:
        raise InferstackError(
            f"a stack is already running (supervisor pid {running.supervisor_pid}, "
            f"{running.base_url}); stop it with `inferstack down` first"
        )
    if args.detach:
        # A method this model or engine cannot run fails here, before the supervisor detaches (in
        # the foreground the supervisor's own check does, before anything starts).
        resolve_speculation(config.speculative, resolve_model(config.model, config.served_model_name),
                            env_python(engine_env_for(config.engine.engine)))
        return _up_detached(config, state)
    return _up_foreground(config, state, args.config)


def _up_foreground(config: StackConfig, state: StateFile, config_path: Path | None) -> int:
    # Imported here: the supervisor brings the gateway, grpc and the engine code, which no other
    # command of this module needs (each CLI call imports every command module).
    from inferstack.stack.autoscaler import LocalAutoscaler
    from inferstack.stack.supervisor import Supervisor

    engine_python = env_python(engine_env_for(config.engine.engine))
    config = with_kv_events(config, state.run_dir)
    batch = _batch_settings(config, state)
    if batch is not None and batch.gateway_key_file is not None:
        _write_service_key(state)
    monitoring = _monitoring_factory(config, batch)
    supervisor = Supervisor(config, engine_python, state, config_path=config_path,
                            front_end_factory=_gateway_factory(config, batch),
                            batch_factory=_batch_factory(batch),
                            autoscaler=LocalAutoscaler(config.autoscaling) if config.autoscaling else None,
                            monitoring_factory=monitoring[0] if monitoring else None,
                            metrics_port=monitoring[1] if monitoring else None)
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
        data = state.read()
        if data is not None and data.state == "ready" and data.supervisor_pid == child.pid:
            print(f"OpenAI API ready at {data.base_url}  (model: {data.model}, "
                  f"speculative: {data.speculative}{', batch API on' if data.batch else ''}); "
                  "stop with `inferstack down`", flush=True)
            return 0
        code = child.poll()
        if code is not None:
            reported = data.error if data is not None else None
            state.remove()
            raise ReplicaStartError(f"{reported or f'the supervisor exited with code {code}'}\n(supervisor log: "
                                    f"{log_path})", "" if reported else log_tail(log_path))
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
    figures = {r.name: fetch_figures(r.url) if r.state == "ready" else None for r in data.replicas}
    if args.json:
        doc: dict[str, Any] = {"running": True, **data.model_dump(mode="json")}
        for r, entry in zip(data.replicas, doc["replicas"]):
            f = figures[r.name]
            entry["metrics"] = f.as_dict() if f else None
            entry["uptime_s"] = round(now - r.started_at, 1) if r.started_at else None
        if data.gateway is not None and doc["gateway"] is not None:
            flow = _flow_control(data.gateway)
            doc["gateway"]["flow_control"] = flow.model_dump(mode="json") if flow else None
        print(json.dumps(doc, indent=2))
        return 0
    print(f"base_url: {data.base_url}   model: {data.model}   speculative: {data.speculative}"
          f"   supervisor pid {data.supervisor_pid} ({data.state})")
    print(f"replicas: {data.ready_replicas} ready / {data.desired_replicas} desired   "
          f"config generation {data.generation}   dtype: {data.dtype} ({data.dtype_reason})")
    auto = data.autoscaling
    if auto:
        print(f"autoscaling: {auto.min_replicas}..{auto.max_replicas} on {auto.policy}, every "
              f"{auto.sync_period_s:g}s; last: {auto.last_decision or '-'}")
    print(f"{'NAME':5} {'URL':24} {'STATE':9} {'PID':>7} {'UPTIME':>7} {'RUN':>4} {'WAIT':>4} "
          f"{'KV%':>5} {'ACCEPT':>6} RESTARTS LOG")
    for r in data.replicas:
        m = figures[r.name]
        uptime = now - r.started_at if r.started_at else None
        print(
            f"{r.name:5} {r.url:24} {r.state:9} {r.pid or '-':>7} "
            f"{_fmt(uptime, '.0f', 's'):>7} {_fmt(m.running if m else None, '.0f'):>4} "
            f"{_fmt(m.waiting if m else None, '.0f'):>4} {_fmt(_pct(m.kv_cache_usage if m else None), '.1f'):>5} "
            f"{_fmt(_pct(m.acceptance_rate if m else None), '.0f', '%'):>6} {r.restarts:>8} {r.log}"
        )
    gateway = data.gateway
    if gateway:
        for name, proc, ports in (("envoy", gateway.envoy, f"port {gateway.envoy.port}, admin_port "
                                                            f"{gateway.envoy.admin_port}"),
                                  *((picker_name(i), p, f"grpc_port {p.grpc_port}, metrics_port {p.metrics_port}")
                                    for i, p in enumerate(gateway.pickers))):
            print(f"gateway {name:5} {proc.state:9} pid {proc.pid or '-'}  {ports}  "
                  f"restarts {proc.restarts}  log {proc.log}")
        flow = _flow_control(gateway) if gateway.flow_control_enabled else None
        if flow is not None:
            print(flow.summary())
    batch = data.batch
    if batch:
        print(f"batch         {batch.state:9} pid {batch.pid or '-'}  port {batch.port}  "
              f"state {batch.state_dir}  log {batch.log}")
    mon = data.monitoring
    if mon:
        print(f"monitoring    {mon.state:9} pid {mon.pid or '-'}  {mon.url} (Prometheus: /graph, /alerts)  "
              f"log {mon.log}")
    if data.events:
        print("recent events:")
        for e in data.events[-args.events:]:
            print(f"  {time.strftime('%H:%M:%S', time.localtime(e.at))} {e.kind:15} {e.message}")
    return 0


def _flow_control(gateway: GatewayStatus) -> FlowControlStatus | None:
    """The pickers' queues per tenant, live from their /metrics pages (None when none answers)."""
    pages = epp_metrics_pages(gateway, 2.0)
    return read_flow_control(pages, gateway.flow_control_enabled) if pages else None


def _running_state() -> tuple[StateFile, StackStatus]:
    state = StateFile()
    data = state.live()
    if data is None or data.state != "ready":
        raise InferstackError("no running stack to change (start one with `inferstack up --detach`)"
                              if data is None else f"the stack is {data.state}, not ready; try again")
    return state, data


def _submit_and_wait(action: str, payload: dict[str, Any], timeout_s: float, what: str) -> StackStatus:
    """Queue a request, wait for the supervisor's answer, then until the stack has converged on it
    (the desired count of ready replicas, all of the current generation, none left retiring)."""
    state, _ = _running_state()
    request_id = submit_request(state.run_dir, action, payload)
    answer = _await_answer(state, request_id, action, 30.0)
    print(f"[{action}] {answer.message}", flush=True)
    desired, generation = answer.desired_replicas, answer.generation
    begun = time.monotonic()
    before = state.read()
    seen = {e.at for e in (before.events if before else []) if e.at < answer.at}
    last_line = 0.0
    while True:
        data = state.live()
        if data is None:
            raise InferstackError("the stack stopped while converging")
        for e in data.events:
            if e.at not in seen:
                seen.add(e.at)
                print(f"[{action}] {e.message}", flush=True)
        if data.desired_replicas != desired or data.generation != generation:
            raise InferstackError(f"the stack's desired state changed meanwhile (now {data.desired_replicas} "
                                  f"replicas, generation {data.generation})")
        replicas = data.replicas
        if len(replicas) == desired and all(r.state == "ready" and r.generation == generation
                                             for r in replicas):
            print(f"[{action}] done in {time.monotonic() - begun:.0f}s: {what.format(n=desired)}", flush=True)
            return data
        failing = [r for r in replicas if r.generation == generation and r.restarts >= 2]
        if failing:
            r = failing[0]
            raise ReplicaStartError(f"replica {r.name} ({r.url}) keeps failing: {r.last_exit} "
                                    f"({r.restarts} restarts; the stack retries with backoff); log: {r.log}",
                                    log_tail(Path(r.log)))
        elapsed = time.monotonic() - begun
        if elapsed > timeout_s:
            raise InferstackError(f"not converged within {timeout_s:.0f}s; see `inferstack status`")
        if time.monotonic() - last_line >= 5.0:
            ready = sum(r.state == "ready" and r.generation == generation for r in replicas)
            print(f"[{action}] {ready}/{desired} ready ({elapsed:.0f}s)", flush=True)
            last_line = time.monotonic()
        time.sleep(0.3)


def _await_answer(state: StateFile, request_id: str, action: str, timeout_s: float) -> ControlAnswer:
    """The supervisor's answer to a queued request (raises with its message when refused)."""
    deadline = time.monotonic() + timeout_s
    while True:
        data = state.live()
        if data is None:
            raise InferstackError("the stack stopped before answering")
        answer = data.requests.get(request_id)
        if answer is not None:
            if not answer.ok:
                raise ConfigError(answer.message)
            return answer
        if time.monotonic() > deadline:
            raise InferstackError(f"the supervisor did not answer the {action} request within {timeout_s:.0f}s "
                                  f"(pid {data.supervisor_pid}; log {state.run_dir / 'supervisor.log'})")
        time.sleep(0.2)


def _adapter_request(args: argparse.Namespace) -> int:
    state, _ = _running_state()
    payload = {"name": args.name}
    if args.action == "adapter-load":
        payload["source"] = str(Path(args.source).resolve()) if Path(args.source).exists() else args.source
    request_id = submit_request(state.run_dir, args.action, payload)
    print(_await_answer(state, request_id, args.action, args.timeout).message, flush=True)
    return 0


def _adapters_list(args: argparse.Namespace) -> int:
    from inferstack.lora import LoraClient

    _, data = _running_state()
    held: dict[str, dict[str, Any]] = {}
    with LoraClient() as client:
        for r in data.replicas:
            if r.state != "ready":
                continue
            for adapter in client.list_adapters(r.url):
                entry = held.setdefault(adapter.name, {"name": adapter.name, "source": adapter.source,
                                                       "parent": adapter.parent, "replicas": []})
                entry["replicas"].append(r.name)
    declared = data.adapters.declared if data.adapters else {}
    for name, source in declared.items():
        held.setdefault(name, {"name": name, "source": source, "parent": data.model, "replicas": []})
    rows = [dict(e, declared=e["name"] in declared) for e in held.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no adapters (load one with `inferstack adapters load NAME DIR`)")
    for e in rows:
        print(f"{e['name']:24} replicas {','.join(e['replicas']) or '-':10} "
              f"{'runtime' if e['declared'] else 'static ':8} {e['source']}")
    return 0


def register_adapter_commands(sub: argparse._SubParsersAction) -> None:
    """`adapters load|unload|list` on the running stack (added to the `adapters` command)."""
    load = sub.add_parser("load", help="load an adapter on every replica (and every replica added later)")
    load.add_argument("name", help="the name clients send as `model`")
    load.add_argument("source", help="adapter folder (adapter_config.json + weights) or hub id org/name")
    load.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every replica")
    load.set_defaults(func=_adapter_request, action="adapter-load")
    unload = sub.add_parser("unload", help="stop serving an adapter on every replica")
    unload.add_argument("name")
    unload.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    unload.set_defaults(func=_adapter_request, action="adapter-unload")
    listing = sub.add_parser("list", help="adapters served by the running stack, and where")
    listing.add_argument("--json", action="store_true", help="a list of {name, source, parent, replicas, declared}")
    listing.set_defaults(func=_adapters_list)


def _scale(args: argparse.Namespace) -> int:
    _submit_and_wait("scale", {"replicas": args.replicas}, args.timeout, "{n} replica(s) ready")
    return 0


def _reconfigure(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = read_yaml_mapping(args.config, "reconfigure file") if args.config else {}
    for flag, key in (("spec", "method"), ("spec_tokens", "num_speculative_tokens"), ("spec_model", "model")):
        value = getattr(args, flag)
        if value is not None:
            changes.setdefault("speculative", {})[key] = value
    if args.max_num_seqs is not None:
        changes.setdefault("engine", {})["max_num_seqs"] = args.max_num_seqs
    _submit_and_wait("reconfigure", {"changes": changes}, args.timeout,
                     "{n} replica(s) ready on the new settings")
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
    supervisor_pid = data.supervisor_pid
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
    pids = [r.pid for r in data.replicas]
    if data.gateway is not None:
        pids += [data.gateway.envoy.pid, *(p.pid for p in data.gateway.pickers)]
    if data.batch is not None:
        pids.append(data.batch.pid)
    if data.monitoring is not None:
        pids.append(data.monitoring.pid)
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
    up.add_argument("--pickers", type=int, help="endpoint picker processes, active-active (default 1; 2 keeps "
                    "routing through one picker's death)")
    up.add_argument("--no-batch", action="store_true", help="no batch service (/v1/files, /v1/batches)")
    up.add_argument("--auth-file", help="API keys and tenants (a YAML list of {key, tenant}; `inferstack keys "
                    "add` writes one): every request needs Authorization: Bearer <key>")
    up.add_argument("--insecure", action="store_true", help="serve a gateway listen_host beyond loopback "
                    "without API keys (anyone who reaches it can use it)")
    up.add_argument("--monitoring", action="store_true", help="run Prometheus (Debian's prometheus package) "
                    "scraping the whole stack, with recording rules and alerts; status shows its URL")
    up.add_argument("--lora", action="store_true",
                    help="serve LoRA adapters: static ones from the lora: section, runtime ones with "
                         "`inferstack adapters load`")
    up.add_argument("--autoscale", action="store_true",
                    help="run the local autoscaler (the config's autoscaling: section, else queue "
                         "target 5, one replica per core at most)")
    up.add_argument("--min", type=int, help="autoscaler: fewest replicas (0: scale to zero when idle)")
    up.add_argument("--max", type=int, help="autoscaler: most replicas")
    up.add_argument("--detach", action="store_true", help="run in the background; stop with `down`")
    up.set_defaults(func=_up)

    status = subparsers.add_parser("status", help="show the running stack")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--events", type=int, default=8, help="recent events to show (default 8)")
    status.set_defaults(func=_status)

    scale = subparsers.add_parser("scale", help="set the number of replicas of the running stack")
    scale.add_argument("replicas", type=int, help="replicas wanted (0: none until a request comes)")
    scale.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for them to be ready")
    scale.set_defaults(func=_scale)

    reconf = subparsers.add_parser("reconfigure", help="change the replicas' settings with a rolling restart")
    reconf.add_argument("--config", type=Path, help="YAML with speculative: and/or engine: sections")
    reconf.add_argument("--spec", choices=SPEC_METHODS, help="speculative decoding method")
    reconf.add_argument("--spec-tokens", type=int, help="num_speculative_tokens (k)")
    reconf.add_argument("--spec-model", help="draft model (draft) or EAGLE head (eagle, eagle3)")
    reconf.add_argument("--max-num-seqs", type=int, help="--max-num-seqs of each replica")
    reconf.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the rollout")
    reconf.set_defaults(func=_reconfigure)

    down = subparsers.add_parser("down", help="stop the stack started with --detach")
    down.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for a clean stop")
    down.set_defaults(func=_down)
