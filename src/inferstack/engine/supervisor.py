"""The supervisor: starts N vLLM replicas, watches them, restarts crashed ones, drains on stop.

One state machine per replica, advanced by ``tick()`` (every ~0.5 s, from one thread):

    starting --/health 200--> ready --process exit or N failed checks--> backoff --delay--> starting
       |  (during the first start: exit or timeout aborts `up` with the log tail)
    stop(): endpoints file emptied (no new requests) --> drain (in-flight -> 0, bounded)
            --> gateway stopped --> SIGTERM --grace--> SIGKILL -> stopped

The restart delay doubles per crash (capped) and resets once a replica has stayed ready for a
minute. Every transition rewrites the state file (what `status`/`down` read) and the endpoints
file (ready replicas as ``host:port``; the gateway's local discovery watches it).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from inferstack.config import StackConfig
from inferstack.engine.args import build_replica_argv, build_replica_env
from inferstack.engine.cpus import available_cores, plan_core_sets
from inferstack.engine.replica import Replica, ReplicaSpec
from inferstack.engine.state import StateFile
from inferstack.errors import PortInUseError, ReplicaStartError
from inferstack.models.resolve import ResolvedModel, resolve_model
from inferstack.process import log_tail, port_is_free

__all__ = ["FrontEnd", "Supervisor", "check_port_free"]

log = logging.getLogger(__name__)

_TICK_S = 0.5
_STABLE_AFTER_S = 60.0  # a replica ready this long has its restart backoff reset


class FrontEnd(Protocol):
    """What the supervisor needs of the gateway (Envoy + EPP) it may put in front of replicas."""

    url: str  # http://host:port, the OpenAI API under /v1

    def check_ports(self) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def heal(self) -> list[str]: ...


def check_port_free(host: str, port: int, what: str) -> None:
    if not port_is_free(host, port):
        raise PortInUseError(
            f"port {port} on {host} (for {what}) is already in use; stop what holds it "
            f"(`ss -ltnp 'sport = :{port}'`) or choose another port (--base-port / config)"
        )


class Supervisor:
    def __init__(
        self,
        config: StackConfig,
        engine_python: Path,
        state: StateFile | None = None,
        *,
        config_path: Path | None = None,
        front_end_factory: Callable[[Path, Path], FrontEnd] | None = None,
        batch_factory: Callable[[Path], FrontEnd] | None = None,
    ) -> None:
        self.config = config
        self.engine_python = engine_python
        self.state = state or StateFile()
        self.config_path = config_path
        self.model: ResolvedModel = resolve_model(config.model, config.served_model_name)
        self.replicas: list[Replica] = []
        self.front_end: FrontEnd | None = None
        self._front_end_factory = front_end_factory
        # The batch service (OpenAI Files + Batch API): started after the gateway it sends lines
        # through, healed like it, stopped first (no new lines while replicas drain).
        self.batch: FrontEnd | None = None
        self._batch_factory = batch_factory
        self._lock = threading.Lock()
        self._phase = "starting"
        self._error: str | None = None
        self.started_at = time.time()

    # ----- planning -------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.state.run_dir

    @property
    def endpoints_path(self) -> Path:
        return self.run_dir / "endpoints.json"

    def plan(self) -> list[ReplicaSpec]:
        engine = self.config.engine
        core_sets = plan_core_sets(self.config.replicas, available_cores(), engine.cores_per_replica)
        specs = []
        for i in range(self.config.replicas):
            port = engine.base_port + i
            specs.append(
                ReplicaSpec(
                    name=f"r{i}",
                    host=engine.host,
                    port=port,
                    argv=build_replica_argv(
                        self.engine_python, self.model, port, engine, self.config.speculative
                    ),
                    env=build_replica_env(engine, core_sets[i], self.engine_python),
                    cores=core_sets[i],
                    log_path=self.run_dir / "logs" / f"replica-r{i}.log",
                )
            )
        return specs

    # ----- lifecycle ------------------------------------------------------------------------
    def start(
        self,
        progress: Callable[[str], None] = print,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Start every replica in parallel and wait until all are ready (or raise with a log tail).

        ``should_stop`` is polled while waiting: when it turns true (Ctrl-C, `down`) everything
        started so far is stopped and KeyboardInterrupt is raised."""
        specs = self.plan()
        for spec in specs:
            check_port_free(spec.host, spec.port, f"replica {spec.name}")
        if self._front_end_factory is not None:
            # Built (and its ports checked) before any replica starts: a busy 8080 fails at once.
            self.front_end = self._front_end_factory(self.endpoints_path, self.run_dir / "gateway")
            self.front_end.check_ports()
        if self._batch_factory is not None:
            self.batch = self._batch_factory(self.run_dir / "batch-service")
            self.batch.check_ports()
        for spec in specs:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            spec.log_path.write_bytes(b"")  # one log per `up`; restarts append to it
        self.replicas = [Replica(spec) for spec in specs]
        for replica in self.replicas:
            replica.start()
        self._publish()
        timeout = self.config.engine.ready_timeout_s
        begun = time.monotonic()
        last_line = 0.0
        try:
            while True:
                if should_stop():
                    raise KeyboardInterrupt("stopped while starting")
                pending = [r for r in self.replicas if r.state != "ready"]
                for replica in pending:
                    self._check_starting(replica, initial=True)
                if all(r.state == "ready" for r in self.replicas):
                    break
                elapsed = time.monotonic() - begun
                if elapsed > timeout:
                    late = next(r for r in self.replicas if r.state != "ready")
                    raise ReplicaStartError(
                        f"replica {late.spec.name} ({late.spec.url}) did not become ready within "
                        f"{timeout:.0f}s; log: {late.spec.log_path}",
                        log_tail(late.spec.log_path),
                    )
                if time.monotonic() - last_line >= 5.0:
                    ready = sum(r.state == "ready" for r in self.replicas)
                    progress(f"[up] {ready}/{len(self.replicas)} replicas ready ({elapsed:.0f}s)")
                    last_line = time.monotonic()
                time.sleep(_TICK_S)
            if self.front_end is not None:
                progress("[up] replicas ready; starting the gateway (Envoy + endpoint picker)")
                self.front_end.start()
            if self.batch is not None:
                progress("[up] starting the batch service (/v1/files, /v1/batches)")
                self.batch.start()
        except BaseException as exc:
            self._error = str(exc)
            self._phase = "failed"
            self.stop(drain=False)
            raise
        self._phase = "ready"
        self._publish()
        progress(f"[up] ready in {time.monotonic() - begun:.0f}s: {self.base_url}")

    def run(self, stop_event: threading.Event) -> None:
        """Watch until ``stop_event`` is set."""
        while not stop_event.wait(_TICK_S):
            self.tick()

    def tick(self) -> None:
        self._check_front_end()
        now = time.monotonic()
        for replica in self.replicas:
            if replica.state == "backoff":
                if now >= replica.next_start_at:
                    replica.start()
                    self._publish()
            elif replica.state == "starting":
                self._check_starting(replica, initial=False)
            elif replica.state == "ready":
                self._check_ready(replica)

    def stop(self, drain: bool = True) -> None:
        """Drain and stop everything; idempotent."""
        self._phase = "stopping" if self._phase != "failed" else "failed"
        self._publish()
        engine = self.config.engine
        drain_s = engine.drain_timeout_s if drain else 0.0
        if self.batch is not None:
            self.batch.stop()  # its unfinished lines stay pending in its database for the next `up`
        # Drain first, while the gateway still carries the answers of in-flight requests.
        if drain_s > 0:
            with ThreadPoolExecutor(max_workers=max(1, len(self.replicas))) as pool:
                list(pool.map(lambda r: r.drain(drain_s), self.replicas))
        if self.front_end is not None:
            self.front_end.stop()
        with ThreadPoolExecutor(max_workers=max(1, len(self.replicas))) as pool:
            list(pool.map(lambda r: r.stop(0.0, engine.terminate_timeout_s), self.replicas))
        for replica in self.replicas:
            replica.close()
        self.endpoints_path.unlink(missing_ok=True)

    # ----- state machine steps -------------------------------------------------------------
    def _check_front_end(self) -> None:
        """Envoy and the EPP are supervised too: the one that died is restarted alone (Envoy keeps
        serving routed streams while the EPP comes back), with backoff."""
        if self.front_end is not None and self.front_end.heal():
            self._publish()
        if self.batch is not None and self.batch.heal():
            self._publish()

    def _check_starting(self, replica: Replica, initial: bool) -> None:
        code = replica.exited()
        if code is not None:
            if initial:
                replica.state = "failed"
                raise ReplicaStartError(
                    f"replica {replica.spec.name} ({replica.spec.url}) exited with code {code} "
                    f"while starting; log: {replica.spec.log_path}",
                    log_tail(replica.spec.log_path),
                )
            self._schedule_restart(replica, f"exited with code {code} while starting")
            return
        if replica.healthy(timeout_s=1.0):
            replica.state = "ready"
            replica.ready_at = time.time()
            replica.failed_checks = 0
            log.info("replica %s ready: pid %s after %.1fs", replica.spec.name, replica.pid,
                     replica.ready_at - replica.started_at)
            self._publish()
        elif not initial and time.time() - replica.started_at > self.config.engine.ready_timeout_s:
            self._schedule_restart(replica, "not ready in time")

    def _check_ready(self, replica: Replica) -> None:
        engine = self.config.engine
        code = replica.exited()
        if code is not None:
            self._schedule_restart(replica, f"exited with code {code}")
            return
        # Health checks at the configured interval, not every tick.
        if time.time() - replica.last_check_at < engine.health_interval_s:
            return
        replica.last_check_at = time.time()
        if replica.healthy(engine.health_timeout_s):
            replica.failed_checks = 0
            if replica.ready_at and time.time() - replica.ready_at > _STABLE_AFTER_S:
                replica.backoff_s = 0.0
            return
        replica.failed_checks += 1
        if replica.failed_checks >= engine.health_failures:
            self._schedule_restart(replica, f"{replica.failed_checks} failed health checks")

    def _schedule_restart(self, replica: Replica, reason: str) -> None:
        engine = self.config.engine
        replica.stop(0.0, engine.terminate_timeout_s)
        replica.backoff_s = min(
            engine.restart_backoff_max_s,
            replica.backoff_s * 2 if replica.backoff_s else engine.restart_backoff_s,
        )
        replica.next_start_at = time.monotonic() + replica.backoff_s
        replica.restarts += 1
        replica.last_exit = reason
        replica.state = "backoff"
        log.warning("replica %s (pid %s) %s; restart %d in %.1fs", replica.spec.name, replica.pid,
                    reason, replica.restarts, replica.backoff_s)
        self._publish()

    # ----- reporting ------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.front_end is not None:
            return f"{self.front_end.url}/v1"
        first = self.replicas[0].spec if self.replicas else None
        return f"{first.url}/v1" if first else ""

    def ready_endpoints(self) -> list[str]:
        if self._phase in ("stopping", "failed"):
            return []  # the gateway stops sending new requests while in-flight ones drain
        return [f"{r.spec.host}:{r.spec.port}" for r in self.replicas if r.state == "ready"]

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self._phase,
            "error": self._error,
            "supervisor_pid": os.getpid(),
            "started_at": self.started_at,
            "base_url": self.base_url,
            "model": self.model.served_name,
            "model_source": self.model.source,
            "speculative": self.config.speculative.method,
            "config_path": str(self.config_path) if self.config_path else None,
            "endpoints_file": str(self.endpoints_path),
            "replicas": [
                {
                    "name": r.spec.name,
                    "url": r.spec.url,
                    "port": r.spec.port,
                    "pid": r.pid,
                    "state": r.state,
                    "restarts": r.restarts,
                    "last_exit": r.last_exit,
                    "started_at": r.started_at,
                    "ready_at": r.ready_at,
                    "cores": r.spec.cores,
                    "log": str(r.spec.log_path),
                }
                for r in self.replicas
            ],
            "gateway": self.front_end.status() if self.front_end is not None else None,
            "batch": self.batch.status() if self.batch is not None else None,
        }

    def _publish(self) -> None:
        with self._lock:
            self.state.write(self.snapshot())
            self.endpoints_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.endpoints_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"endpoints": self.ready_endpoints()}))
            os.replace(tmp, self.endpoints_path)
