"""The supervisor: reconciles the running stack with its desired state, without ever blocking.

Desired state: a replica count and a config generation (the replicas' settings). Actual state: the
members, each one vLLM process (``engine.Replica``) in a numbered slot (port ``base_port + slot``)
started from some generation. Every ``tick()`` (0.5 s, one thread) advances each member and then
reconciles:

    starting --/health 200 (+ adapters synced, + warm-up answered)--> ready
    ready --exit or N failed checks--> backoff --delay--> starting
    retire: out of the endpoints file (the picker stops routing to it) -> settle -> drain
            (vLLM running + waiting -> 0, bounded) -> SIGTERM --grace--> SIGKILL -> removed

The decision is pure (``stack/plan.py``, tested without processes):
- fewer members than desired: add replicas of the current generation in free slots;
- more: retire the extras, non-ready and old-generation ones first, and a ready one only while
  enough others are ready (no request lost);
- old-generation members (a rolling reconfigure): surge one new replica, retire one old once it is
  ready, repeat (Kubernetes' maxSurge 1, maxUnavailable 0).

Health probes, drains and stops run in a thread pool, so one slow replica never stalls the loop.
Requests (``scale``, ``reconfigure``) come through the control queue (``stack.control``); the
autoscaler (``stack.autoscaler``) and scale-from-zero set the desired count from a second
thread. Every change rewrites the state file (what ``status``/``down`` read, with recent events)
and, when the ready set changes, the endpoints file the gateway's discovery watches.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from inferstack.engine.args import build_replica_argv, build_replica_env
from inferstack.engine.cpus import available_cores, plan_core_sets
from inferstack.engine.replica import Replica, ReplicaSpec
from inferstack.engine.spec_support import resolve_speculation
from inferstack.errors import AdapterError, ConfigError, LoraUnavailable, PortInUseError, ReplicaStartError
from inferstack.batch import BatchServiceStatus
from inferstack.gateway import GatewayStatus, write_endpoints_file
from inferstack.models.resolve import ResolvedModel, resolve_model
from inferstack.monitoring import MonitoringStatus, write_replica_targets
from inferstack.process import log_tail, port_is_free
from inferstack.stack.adapters import SYNC_PERIOD_S, StackAdapters
from inferstack.stack.autoscaler import LocalAutoscaler, ReplicaView, held_requests
from inferstack.stack.config import StackConfig, merge_config
from inferstack.stack.control import ControlRequest, take_requests
from inferstack.stack.metrics import SCALING_SOURCES, SupervisorFigures, serve_supervisor_metrics
from inferstack.stack.plan import Add, MemberView, plan
from inferstack.stack.state import StateFile
from inferstack.stack.status import (AdaptersStatus, ControlAnswer, ReplicaStatus, StackEvent, StackStatus)

__all__ = ["RECONFIGURABLE_KEYS", "FrontEnd", "Member", "Supervisor", "check_port_free"]

log = logging.getLogger(__name__)

_TICK_S = 0.5
_STABLE_AFTER_S = 60.0  # a replica ready this long has its restart backoff reset
# Endpoints file -> the picker's discovery poll (200 ms) -> its EDS file -> Envoy: after this long
# no new request reaches a replica taken out of the endpoints file, and draining can begin.
_ROUTING_SETTLE_S = 1.5
_EVENTS_KEPT = 50
_REQUESTS_KEPT = 20
_MAX_SLOTS = 64
# What `reconfigure` may change: the replicas' own settings (a rolling restart applies them). The
# model, gateway and batch service are the stack's identity: changing them means a new `up`.
RECONFIGURABLE_KEYS = ("speculative", "engine")
_FIXED_ENGINE_KEYS = ("host", "base_port", "engine")


class FrontEnd(Protocol):
    """What the supervisor needs of the gateway (Envoy + EPP) it may put in front of replicas."""

    url: str  # http://host:port, the OpenAI API under /v1

    def check_ports(self) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def status(self) -> GatewayStatus: ...
    def heal(self) -> list[str]: ...


class MonitoringPart(Protocol):
    """What the supervisor needs of the Prometheus it may run beside the stack."""

    def check_ports(self) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def status(self) -> MonitoringStatus: ...
    def heal(self) -> list[str]: ...


class BatchPart(Protocol):
    """What the supervisor needs of the batch service it may run beside the gateway."""

    url: str

    def check_ports(self) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def status(self) -> BatchServiceStatus: ...
    def heal(self) -> list[str]: ...


def check_port_free(host: str, port: int, what: str) -> None:
    if not port_is_free(host, port):
        raise PortInUseError(
            f"port {port} on {host} (for {what}) is already in use; stop what holds it "
            f"(`ss -ltnp 'sport = :{port}'`) or choose another port (--base-port / config)"
        )


@dataclass
class Member:
    """One replica of the stack: its process, slot, the config generation it runs, and the
    background work (a health probe, or a stop) in flight for it."""

    replica: Replica
    slot: int
    generation: int
    retiring: bool = False  # chosen for removal: out of the endpoints file, being drained/stopped
    probe: Future[bool] | None = None  # a health check, or (starting, LoRA) the adapter sync
    stopping: Future[None] | None = None
    synced: bool = False  # its runtime adapters were brought to the declared set
    warmed: bool = False  # its warm-up completion was answered
    incarnation: int = 0  # which start of the replica: work begun for an earlier one changes nothing

    @property
    def name(self) -> str:
        return self.replica.spec.name

    def start(self) -> None:
        """A new incarnation: no adapters, not warm; pool work stamped with an older one is ignored."""
        self.incarnation += 1
        self.synced = self.warmed = False
        self.replica.start()

    @property
    def ready(self) -> bool:
        return self.replica.state == "ready" and not self.retiring


class Supervisor:
    def __init__(
        self,
        config: StackConfig,
        engine_python: Path,
        state: StateFile | None = None,
        *,
        config_path: Path | None = None,
        front_end_factory: Callable[[Path, Path], FrontEnd] | None = None,
        batch_factory: Callable[[Path], BatchPart] | None = None,
        autoscaler: LocalAutoscaler | None = None,
        monitoring_factory: Callable[[Path, Path], MonitoringPart] | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.generation = 1
        self.engine_python = engine_python
        self.state = state or StateFile()
        self.config_path = config_path
        self.model: ResolvedModel = resolve_model(config.model, config.served_model_name)
        self.config = self._runnable(config)  # the current generation's settings
        self.autoscaler = autoscaler
        self.desired = autoscaler.clamp(config.replicas) if autoscaler else config.replicas
        self.members: list[Member] = []
        self.front_end: FrontEnd | None = None
        self._front_end_factory = front_end_factory
        # The batch service (OpenAI Files + Batch API): started after the gateway it sends lines
        # through, healed like it, stopped first (no new lines while replicas drain).
        self.batch: BatchPart | None = None
        self._batch_factory = batch_factory
        # Prometheus (monitoring.enabled): started last, scraping everything above and the
        # supervisor's own /metrics (``metrics_port``); its replica list is a file rewritten here.
        self.monitoring: MonitoringPart | None = None
        self._monitoring_factory = monitoring_factory
        self.metrics_port = metrics_port
        self._stop_metrics: Callable[[], None] | None = None
        self._scaling_events = dict.fromkeys(SCALING_SOURCES, 0)
        self._last_targets: list[tuple[str, str]] | None = None
        self.events: deque[StackEvent] = deque(maxlen=_EVENTS_KEPT)
        self.requests: dict[str, ControlAnswer] = {}
        # Runtime LoRA adapters (lora.enabled): the declared set, synced onto every replica.
        self.adapters = (StackAdapters(self.run_dir / "adapters.yaml", self.model.served_name, config.lora)
                         if config.lora.enabled else None)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="replica-work")
        self._phase = "starting"
        self._error: str | None = None
        self._initial = True  # during `up`: a replica that fails aborts it with its log tail
        self._wake_started: float | None = None  # when a held request woke the stack from zero
        self._last_published = ""
        self._last_endpoints: list[str] | None = None
        self.started_at = time.time()
        if self.desired == 0 and not config.gateway.enabled:
            raise ConfigError("replicas: 0 needs the gateway (it holds the first request while a "
                              "replica starts); enable the gateway or start at least one replica")

    # ----- paths --------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.state.run_dir

    @property
    def endpoints_path(self) -> Path:
        return self.run_dir / "endpoints.json"

    @property
    def targets_path(self) -> Path:
        """The replicas Prometheus scrapes (file_sd), with monitoring on."""
        return self.run_dir / "monitoring" / "replicas.json"

    # ----- lifecycle ------------------------------------------------------------------------
    def start(
        self,
        progress: Callable[[str], None] = print,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Start the desired replicas and wait until all are ready (or raise with a log tail),
        then the gateway and batch service.

        ``should_stop`` is polled while waiting: when it turns true (Ctrl-C, `down`) everything
        started so far is stopped and KeyboardInterrupt is raised."""
        engine = self.config.engine
        for slot in range(self.desired):
            check_port_free(engine.host, engine.base_port + slot, f"replica r{slot}")
        if self._front_end_factory is not None:
            # Built (and its ports checked) before any replica starts: a busy 8080 fails at once.
            self.front_end = self._front_end_factory(self.endpoints_path, self.run_dir / "gateway")
            self.front_end.check_ports()
        if self._batch_factory is not None:
            self.batch = self._batch_factory(self.run_dir / "batch-service")
            self.batch.check_ports()
        if self._monitoring_factory is not None:
            self.monitoring = self._monitoring_factory(self.targets_path, self.run_dir / "monitoring")
            self.monitoring.check_ports()
        for path in (self.run_dir / "logs").glob("replica-*.log"):
            path.unlink()  # one set of logs per `up`; restarts append to their replica's log
        begun = time.monotonic()
        last_line = 0.0
        try:
            with self._lock:
                for _ in range(self.desired):
                    self._add()
            self._publish()
            while not all(m.ready for m in self.members):
                if should_stop():
                    raise KeyboardInterrupt("stopped while starting")
                self.tick()
                elapsed = time.monotonic() - begun
                if elapsed > engine.ready_timeout_s:
                    late = next(m.replica for m in self.members if not m.ready)
                    raise ReplicaStartError(
                        f"replica {late.spec.name} ({late.spec.url}) did not become ready within "
                        f"{engine.ready_timeout_s:.0f}s; log: {late.spec.log_path}",
                        log_tail(late.spec.log_path),
                    )
                if time.monotonic() - last_line >= 5.0:
                    ready = sum(m.ready for m in self.members)
                    progress(f"[up] {ready}/{len(self.members)} replicas ready ({elapsed:.0f}s)")
                    last_line = time.monotonic()
                time.sleep(_TICK_S)
            self._initial = False
            if self.front_end is not None:
                progress("[up] replicas ready; starting the gateway (Envoy + endpoint picker)")
                self.front_end.start()
            if self.batch is not None:
                progress("[up] starting the batch service (/v1/files, /v1/batches)")
                self.batch.start()
            if self.monitoring is not None:
                if self.metrics_port is not None:
                    self._stop_metrics = serve_supervisor_metrics(self.figures, self.metrics_port)
                progress("[up] starting Prometheus (monitoring)")
                self._publish()  # its replica list first
                self.monitoring.start()
        except BaseException as exc:
            self._error = str(exc)
            self._phase = "failed"
            self.stop(drain=False)
            raise
        self._phase = "ready"
        self._event("stack", f"ready with {len(self.members)} replica(s) in {time.monotonic() - begun:.0f}s")
        self._publish()
        progress(f"[up] ready in {time.monotonic() - begun:.0f}s: {self.base_url}")

    def run(self, stop_event: threading.Event) -> None:
        """Reconcile until ``stop_event`` is set; the autoscaler and scale-from-zero watch run
        beside it in their own thread (their metric reads must not delay health checks)."""
        watcher = threading.Thread(target=self._watch, args=(stop_event,), name="autoscaler", daemon=True)
        watcher.start()
        try:
            while not stop_event.wait(_TICK_S):
                self.tick()
        finally:
            watcher.join(timeout=5)

    def tick(self) -> None:
        self._check_front_end()
        with self._lock:
            for request in take_requests(self.run_dir):
                self._answer(request)
            for member in list(self.members):
                self._advance(member)
            if self._phase == "ready":
                self._reconcile()
        self._publish()

    def stop(self, drain: bool = True) -> None:
        """Drain and stop everything; idempotent."""
        self._phase = "stopping" if self._phase != "failed" else "failed"
        self._publish()
        engine = self.config.engine
        drain_s = engine.drain_timeout_s if drain else 0.0
        if self.monitoring is not None:
            self.monitoring.stop()
        if self._stop_metrics is not None:
            self._stop_metrics()
            self._stop_metrics = None
        if self.batch is not None:
            self.batch.stop()  # its unfinished lines stay pending in its database for the next `up`
        # Drain first, while the gateway still carries the answers of in-flight requests.
        members = list(self.members)
        if drain_s > 0 and members:
            with ThreadPoolExecutor(max_workers=len(members)) as pool:
                list(pool.map(lambda m: m.replica.drain(drain_s), members))
        if self.front_end is not None:
            self.front_end.stop()
        if members:
            with ThreadPoolExecutor(max_workers=len(members)) as pool:
                list(pool.map(lambda m: m.replica.stop(0.0, engine.terminate_timeout_s), members))
        for member in members:
            member.replica.close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.endpoints_path.unlink(missing_ok=True)

    # ----- desired state ----------------------------------------------------------------------
    def set_desired(self, replicas: int, source: str, message: str) -> None:
        """Change the desired replica count (the reconcile loop does the rest)."""
        with self._lock:
            if replicas == self.desired:
                return
            self._event(source, message)
            self.desired = replicas
            self._scaling_events[source] = self._scaling_events.get(source, 0) + 1
        self._publish()

    def _answer(self, request: ControlRequest) -> None:
        try:
            if request.action == "scale":
                message = self._request_scale(request.payload)
            elif request.action == "reconfigure":
                message = self._request_reconfigure(request.payload)
            elif request.action in ("adapter-load", "adapter-unload"):
                self._request_adapter(request)
                return  # answered by the pool when done
            else:
                raise ConfigError(request.payload.get("error") or f"unknown action {request.action!r}")
            ok = True
        except ConfigError as exc:
            ok, message = False, str(exc)
        self._record_answer(request.id, ok, message)

    def _record_answer(self, request_id: str, ok: bool, message: str) -> None:
        with self._lock:
            self.requests[request_id] = ControlAnswer(ok=ok, message=message, desired_replicas=self.desired,
                                                      generation=self.generation, at=time.time())
            while len(self.requests) > _REQUESTS_KEPT:
                self.requests.pop(next(iter(self.requests)))

    def _request_adapter(self, request: ControlRequest) -> None:
        """Load/unload on every ready replica, in the pool (a load takes seconds)."""
        if self.adapters is None:
            self._record_answer(request.id, False, (
                "this stack serves no LoRA adapters: start it with `inferstack up --lora` (or lora: "
                "{enabled: true} in its config)"))
            return
        adapters = self.adapters
        urls = [m.replica.spec.url for m in self.members if m.ready]
        name, source = str(request.payload.get("name", "")), str(request.payload.get("source", ""))

        def run() -> None:
            try:
                if request.action == "adapter-load":
                    message = adapters.load(name, source, urls)
                else:
                    message = adapters.unload(name, urls)
                self._event("adapters", message)
                ok = True
            except (AdapterError, ConfigError) as exc:
                ok, message = False, str(exc)
            self._record_answer(request.id, ok, message)
            self._publish()

        self._pool.submit(run)

    def _request_scale(self, payload: dict[str, Any]) -> str:
        replicas = payload.get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= _MAX_SLOTS:
            raise ConfigError(f"scale: replicas must be an integer 0..{_MAX_SLOTS}, got {replicas!r}")
        if self.autoscaler is not None:
            p = self.autoscaler.policy
            raise ConfigError(f"scale: autoscaling is on (min {p.min_replicas}, max {p.max_replicas}, "
                              f"{p.label()}) and owns the replica count; restart the stack without "
                              "--autoscale (or without the autoscaling: section) to scale by hand")
        if replicas == 0 and self.front_end is None:
            raise ConfigError("scale: 0 replicas needs the gateway (it holds the first request while "
                              "a replica starts); this stack runs without one")
        previous = self.desired
        self.set_desired(replicas, "scale", f"scaled {previous} -> {replicas}: requested by `inferstack scale`")
        return f"desired replicas {previous} -> {replicas}"

    def _request_reconfigure(self, payload: dict[str, Any]) -> str:
        changes = payload.get("changes")
        if not isinstance(changes, dict) or not changes:
            raise ConfigError("reconfigure: nothing to change (give --spec, --spec-tokens, ... or a "
                              "config file with speculative:/engine: sections)")
        bad = sorted(set(changes) - set(RECONFIGURABLE_KEYS))
        if bad:
            raise ConfigError(f"reconfigure: cannot change {', '.join(bad)} on a running stack (only "
                              f"{', '.join(RECONFIGURABLE_KEYS)}); stop it and `inferstack up` again")
        fixed = sorted(k for k in (changes.get("engine") or {}) if k in _FIXED_ENGINE_KEYS)
        if fixed:
            raise ConfigError(f"reconfigure: engine.{fixed[0]} is fixed for a running stack; stop it "
                              "and `inferstack up` again")
        try:
            config = self._runnable(merge_config(self.config, changes))
        except ConfigError as exc:
            raise ConfigError(f"reconfigure: {exc}") from exc
        if config == self.config:
            return f"no change: generation {self.generation} already runs these settings"
        self.config = config
        self.generation += 1
        self._event("reconfigure", f"generation {self.generation}: {json.dumps(changes, sort_keys=True)}; "
                    "rolling restart, one replica at a time")
        return f"generation {self.generation}: rolling restart of {self.desired} replica(s)"

    def _runnable(self, config: StackConfig) -> StackConfig:
        """``config`` with its speculative method checked against the model and the engine (a
        ConfigError naming the limitation and the nearest working method) and its draft resolved."""
        speculative = resolve_speculation(config.speculative, self.model, self.engine_python)
        return config if speculative == config.speculative else config.model_copy(update={"speculative": speculative})

    # ----- members ----------------------------------------------------------------------------
    def _cores(self, slot: int) -> list[int]:
        """A new replica's cores, planned for the replicas the stack may run at once: the desired
        count, the autoscaler's maximum, or those running now plus this one (a surge). A running
        replica keeps the cores it started with. Measured: a vLLM-CPU replica bound to exactly the
        cores of a busy one did not become ready in 240 s, one bound to half of them in ~55 s."""
        most = max(1, self.desired, self.autoscaler.policy.max_replicas if self.autoscaler else 0,
                   len(self.members) + 1)
        sets = plan_core_sets(most, available_cores(), self.config.engine.cores_per_replica)
        return sets[slot % most]

    def _spec(self, slot: int) -> ReplicaSpec:
        engine = self.config.engine
        port = engine.base_port + slot
        cores = self._cores(slot)
        return ReplicaSpec(
            name=f"r{slot}", host=engine.host, port=port,
            argv=self._argv(port), env=build_replica_env(engine, cores, self.engine_python, lora=self.config.lora),
            cores=cores, log_path=self.run_dir / "logs" / f"replica-r{slot}.log",
        )

    def _argv(self, port: int) -> list[str]:
        gw = self.config.gateway
        kv_events = gw.epp.kv_events if gw.enabled and gw.epp.kv_events.enabled else None
        return build_replica_argv(self.engine_python, self.model, port, self.config.engine,
                                  self.config.speculative, self.config.lora, kv_events)

    def _add(self) -> Member | None:
        """Start a replica of the current generation in the lowest free slot whose port is free."""
        used = {m.slot for m in self.members}
        engine = self.config.engine
        for slot in range(_MAX_SLOTS):
            if slot in used:
                continue
            if not port_is_free(engine.host, engine.base_port + slot):
                if self._initial:
                    check_port_free(engine.host, engine.base_port + slot, f"replica r{slot}")
                continue
            member = Member(Replica(self._spec(slot)), slot, self.generation)
            member.start()
            self.members.append(member)
            self._event("replica", f"replica {member.name} starting on port {member.replica.spec.port} "
                        f"(pid {member.replica.pid}, cores {member.replica.spec.cores or 'all'}, "
                        f"generation {self.generation})")
            return member
        self._event("error", f"no free slot/port for a new replica in {engine.base_port}.."
                    f"{engine.base_port + _MAX_SLOTS - 1}")
        return None

    def _advance(self, m: Member) -> None:
        """One step of one member's state machine; never waits on the replica."""
        r = m.replica
        engine = self.config.engine
        if m.stopping is not None:
            if not m.stopping.done():
                return
            if m.stopping.exception() is not None:
                log.error("stopping replica %s failed: %s", m.name, m.stopping.exception())
            m.stopping = None
            if m.retiring:
                self.members.remove(m)
                r.close()
                self._event("replica", f"replica {m.name} removed")
                return
            r.state = "backoff"  # the stop ran for a restart
        if m.retiring:
            return
        if r.state == "backoff":
            if time.monotonic() >= r.next_start_at:
                m.start()
            return
        code = r.exited()
        if code is not None:
            self._restart(m, f"exited with code {code}" + (" while starting" if r.state == "starting" else ""))
            return
        if m.probe is not None:
            if not m.probe.done():
                return
            ok = m.probe.result()
            m.probe = None
            self._on_probe(m, ok)
            return
        if r.state == "starting":
            m.probe = self._pool.submit(r.healthy, 1.0)
        elif r.state == "ready" and time.time() - r.last_check_at >= engine.health_interval_s:
            r.last_check_at = time.time()
            m.probe = self._pool.submit(r.healthy, engine.health_timeout_s)

    def _on_probe(self, m: Member, ok: bool) -> None:
        r = m.replica
        engine = self.config.engine
        if r.state == "starting":
            if ok and self.adapters is not None and not m.synced:
                # a new or restarted vLLM has no runtime adapters: sync before it takes requests
                m.probe = self._pool.submit(self._sync_new, m, m.incarnation)
                return
            if ok and engine.warm_up and not m.warmed:
                m.probe = self._pool.submit(self._warm_up, m, m.incarnation)
                return
            if ok:
                r.state = "ready"
                r.ready_at = r.last_check_at = time.time()
                r.failed_checks = 0
                self._event("replica", f"replica {m.name} ready after {r.ready_at - r.started_at:.1f}s "
                            f"(pid {r.pid})")
                if self._wake_started is not None:
                    self._event("scale-from-zero", f"first replica ready {time.time() - self._wake_started:.1f}s "
                                "after the picker began holding requests")
                    self._wake_started = None
            elif time.time() - r.started_at > engine.ready_timeout_s:
                self._restart(m, f"not ready within {engine.ready_timeout_s:.0f}s")
            return
        if r.state != "ready":
            return
        if ok:
            r.failed_checks = 0
            if r.ready_at and time.time() - r.ready_at > _STABLE_AFTER_S:
                r.backoff_s = 0.0
            return
        r.failed_checks += 1
        if r.failed_checks >= engine.health_failures:
            self._restart(m, f"{r.failed_checks} failed health checks")

    def _sync_new(self, m: Member, incarnation: int) -> bool:
        """Runs in the pool: the starting replica's adapters; True = it may enter routing. A sync
        that ends after the replica was restarted loaded into the dead incarnation: it counts for
        nothing (the new one syncs again)."""
        assert self.adapters is not None
        try:
            failed = [o for o in self.adapters.sync(m.replica.spec.url) if not o.ok]
        except LoraUnavailable:
            return False  # not answering after all: probe again
        if m.incarnation != incarnation:
            return False
        for outcome in failed:
            self._event("adapters", f"replica {m.name}: {outcome.error}")
        m.synced = True
        return True

    def _warm_up(self, m: Member, incarnation: int) -> bool:
        """Runs in the pool: the warm-up completion; True = it may enter routing. A replica that
        answers with an error still enters (its health is what decides): the event says why. A
        warm-up answered by an incarnation that has since died warms nothing."""
        t0 = time.monotonic()
        try:
            problem = m.replica.warm_up(self.model.served_name, self.config.engine.ready_timeout_s)
        except httpx.HTTPError:
            return False  # not answering after all: probe again
        if m.incarnation != incarnation:
            return False
        m.warmed = True
        if problem is not None:
            self._event("replica", f"replica {m.name}: the warm-up completion failed ({problem})")
        else:
            log.info("replica %s warmed up in %.2fs", m.name, time.monotonic() - t0)
        return True

    def _restart(self, m: Member, reason: str) -> None:
        r = m.replica
        engine = self.config.engine
        if self._initial:
            r.state = "failed"
            raise ReplicaStartError(f"replica {m.name} ({r.spec.url}) {reason}; log: {r.spec.log_path}",
                                    log_tail(r.spec.log_path))
        r.backoff_s = min(engine.restart_backoff_max_s,
                          r.backoff_s * 2 if r.backoff_s else engine.restart_backoff_s)
        r.next_start_at = time.monotonic() + r.backoff_s
        r.restarts += 1
        r.last_exit = reason
        r.state = "backoff"
        # A probe still in flight belongs to the incarnation that just ended: its answer (a /health
        # 200 sent just before a SIGKILL) must not mark the next incarnation ready before it listens.
        m.probe = None
        last_line = (log_tail(r.spec.log_path, 1) or "").strip()[:200]
        self._event("replica", f"replica {m.name} (pid {r.pid}) {reason}; restart {r.restarts} in "
                    f"{r.backoff_s:.1f}s" + (f"; log: {last_line}" if last_line else ""))
        m.stopping = self._pool.submit(r.stop, 0.0, engine.terminate_timeout_s)

    def _retire(self, m: Member, why: str) -> None:
        """Take a member out of routing now; drain and stop it in the background."""
        r = m.replica
        was_ready = r.state == "ready"
        m.retiring = True
        self._event("replica", f"replica {m.name} retiring ({why})" + (": draining" if was_ready else ""))
        if m.stopping is not None:
            return  # already stopping (a restart): it is removed when that ends
        if was_ready:
            r.state = "draining"
        engine = self.config.engine

        def drain_and_stop() -> None:
            if was_ready:
                time.sleep(_ROUTING_SETTLE_S)  # the gateway has stopped choosing it
                r.drain(engine.drain_timeout_s)
            r.stop(0.0, engine.terminate_timeout_s)

        m.stopping = self._pool.submit(drain_and_stop)

    def _reconcile(self) -> None:
        """Carry out the reconcile plan (``stack/plan.py``: pure) for the members as they are now."""
        by_slot = {m.slot: m for m in self.members}
        views = [MemberView(m.slot, m.generation, m.ready, m.retiring) for m in self.members]
        for step in plan(views, self.desired, self.generation):
            if isinstance(step, Add):
                self._add()
            else:
                self._retire(by_slot[step.slot], step.why)

    # ----- autoscaler / scale-from-zero (their own thread) -------------------------------------
    def _watch(self, stop_event: threading.Event) -> None:
        next_sync = next_adapters = time.monotonic()
        while not stop_event.wait(_TICK_S):
            try:
                if self._phase != "ready":
                    continue
                if self.adapters is not None and (time.monotonic() >= next_adapters or self.adapters.changed()):
                    next_adapters = time.monotonic() + SYNC_PERIOD_S
                    self._sync_adapters()
                if self.desired == 0 and self.front_end is not None:
                    self._wake_if_held()
                elif self.autoscaler is not None and time.monotonic() >= next_sync:
                    next_sync = time.monotonic() + self.autoscaler.policy.sync_period_s
                    self._autoscale()
            except Exception:  # the loop outlives one bad sync; the stack keeps serving
                log.exception("autoscaler sync failed")

    def _sync_adapters(self) -> None:
        """The lora-syncer's periodic reconcile, on every ready replica."""
        assert self.adapters is not None
        with self._lock:
            ready = [(m.name, m.replica.spec.url) for m in self.members if m.ready]
        for name, url in ready:
            try:
                outcomes = self.adapters.sync(url)
            except LoraUnavailable as exc:
                log.warning("adapter sync of %s skipped: %s", name, exc)
                continue
            for o in outcomes:
                self._event("adapters", f"replica {name}: {o.action.kind} '{o.action.name}'"
                            + ("" if o.ok else f" failed: {o.error}"))
        self._publish()

    def _views(self) -> list[ReplicaView]:
        with self._lock:
            return [ReplicaView(m.name, m.replica.spec.url, m.replica.state, m.retiring)
                    for m in self.members]

    def _autoscale(self) -> None:
        assert self.autoscaler is not None
        current = self.desired
        decision = self.autoscaler.sync(time.monotonic(), current, self._views())
        if decision.rescale and self.desired == current:
            self.set_desired(decision.desired_replicas, "autoscaler", decision.message())
            self.autoscaler.record_scale(time.monotonic(), current, decision.desired_replicas)

    def _wake_if_held(self) -> None:
        assert self.front_end is not None
        held = held_requests(self.front_end.status())
        if not held:
            return
        target = max(1, self.autoscaler.policy.min_replicas) if self.autoscaler else 1
        self._wake_started = time.time()
        self.set_desired(target, "scale-from-zero",
                         f"scaled 0 -> {target}: {held:g} request(s) held by the endpoint picker")
        if self.autoscaler is not None:
            self.autoscaler.record_scale(time.monotonic(), 0, target)

    # ----- front end ---------------------------------------------------------------------------
    def _check_front_end(self) -> None:
        """Envoy and the EPP are supervised too: the one that died is restarted alone (Envoy keeps
        serving routed streams while the EPP comes back), with backoff."""
        for part in (self.front_end, self.batch, self.monitoring):
            if part is not None:
                for line in part.heal():
                    self._event("gateway", line)

    # ----- reporting ------------------------------------------------------------------------
    def _event(self, kind: str, message: str) -> None:
        log.info("%s: %s", kind, message)
        self.events.append(StackEvent(at=time.time(), kind=kind, message=message))

    @property
    def base_url(self) -> str:
        if self.front_end is not None:
            return f"{self.front_end.url}/v1"
        first = self.members[0].replica.spec if self.members else None
        return f"{first.url}/v1" if first else ""

    def ready_endpoints(self) -> list[str]:
        if self._phase in ("stopping", "failed"):
            return []  # the gateway stops sending new requests while in-flight ones drain
        return [f"{m.replica.spec.host}:{m.replica.spec.port}" for m in self.members if m.ready]

    def snapshot(self) -> StackStatus:
        with self._lock:
            return StackStatus(
                state=self._phase, error=self._error, supervisor_pid=os.getpid(), started_at=self.started_at,
                base_url=self.base_url, model=self.model.served_name, model_source=self.model.source,
                speculative=self.config.speculative.method, dtype=self.config.engine.resolved_dtype,
                dtype_reason=self.config.engine.dtype_reason,
                config_path=str(self.config_path) if self.config_path else None,
                endpoints_file=str(self.endpoints_path), desired_replicas=self.desired,
                ready_replicas=sum(m.ready for m in self.members), generation=self.generation,
                replicas=[self._member_info(m) for m in self.members],
                autoscaling=self.autoscaler.status() if self.autoscaler is not None else None,
                adapters=(AdaptersStatus(declared=dict(self.adapters.declared().ensure_exist),
                                         file=str(self.adapters.path)) if self.adapters is not None else None),
                events=list(self.events), requests=dict(self.requests),
                gateway=self.front_end.status() if self.front_end is not None else None,
                batch=self.batch.status() if self.batch is not None else None,
                monitoring=self.monitoring.status() if self.monitoring is not None else None)

    def figures(self) -> SupervisorFigures:
        """What the supervisor's /metrics exports, read at scrape time."""
        with self._lock:
            last = self.autoscaler.last if self.autoscaler is not None else None
            return SupervisorFigures(
                desired_replicas=self.desired, ready_replicas=sum(m.ready for m in self.members),
                restarts={m.name: m.replica.restarts for m in self.members},
                scaling_events=dict(self._scaling_events),
                autoscaler_desired=last.desired_replicas if last is not None else None)

    def _member_info(self, m: Member) -> ReplicaStatus:
        r = m.replica
        return ReplicaStatus(
            name=r.spec.name, url=r.spec.url, port=r.spec.port, pid=r.pid, state=r.state,
            generation=m.generation, retiring=m.retiring, restarts=r.restarts, last_exit=r.last_exit,
            started_at=r.started_at, ready_at=r.ready_at, cores=r.spec.cores, log=str(r.spec.log_path))

    def _publish(self) -> None:
        """Rewrite the state file when anything changed, and the endpoints file when the ready set
        did (each rewrite makes the picker re-read it)."""
        snapshot = self.snapshot()
        with self._lock:
            text = snapshot.model_dump_json()
            if text != self._last_published:
                self.state.write(snapshot)
                self._last_published = text
            if self._monitoring_factory is not None:  # every member, ready or not: a down one shows as up == 0
                targets = [(m.name, f"{m.replica.spec.host}:{m.replica.spec.port}") for m in self.members]
                if targets != self._last_targets:
                    write_replica_targets(self.targets_path, targets)
                    self._last_targets = targets
            endpoints = self.ready_endpoints()
            if endpoints != self._last_endpoints or not self.endpoints_path.exists():
                self.endpoints_path.parent.mkdir(parents=True, exist_ok=True)
                write_endpoints_file(self.endpoints_path, endpoints)
                self._last_endpoints = endpoints
