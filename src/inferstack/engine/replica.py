"""One vLLM OpenAI server process: start, readiness, health, drain, stop.

Invariants:
- the process is a ``SupervisedProcess``: it runs in its own session, so its whole tree (API
  server, engine core, workers) is one process group that ``stop()`` signals and nothing survives;
- a replica is alive only if its process runs AND /health answers 200 in time;
- ``warm_up()`` sends one short greedy completion whose prompt repeats itself, so an n-gram
  proposer finds matches and the speculative path (proposal, verification) runs once before any
  client request does;
- stop escalates: drain (wait for in-flight requests, from /metrics) -> SIGTERM -> SIGKILL.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from pathlib import Path

import httpx

from inferstack.engine.metrics import fetch_figures
from inferstack.process import SupervisedProcess

__all__ = ["WARM_UP_PROMPT", "Replica", "ReplicaSpec", "ReplicaState"]

# stopped -> starting -> ready -> (backoff -> starting ...) -> draining -> stopped; failed: gave up
ReplicaState = Literal["stopped", "starting", "ready", "backoff", "draining", "failed"]

log = logging.getLogger(__name__)

WARM_UP_PROMPT = "Repeat after me: the quick brown fox jumps over the lazy dog. " * 3
WARM_UP_TOKENS = 24


@dataclass
class ReplicaSpec:
    name: str
    host: str
    port: int
    argv: list[str]
    env: dict[str, str]
    cores: list[int]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class Replica:
    spec: ReplicaSpec
    process: SupervisedProcess | None = None
    started_at: float = 0.0  # wall clock of the last start
    ready_at: float | None = None
    restarts: int = 0
    state: ReplicaState = "stopped"
    failed_checks: int = 0
    last_check_at: float = 0.0  # wall clock of the last health check while ready
    next_start_at: float = 0.0  # monotonic time of the next (re)start while in backoff
    backoff_s: float = 0.0
    last_exit: str | None = None  # why the last incarnation ended, for status
    _client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5.0), repr=False)

    @property
    def proc(self) -> subprocess.Popen[Any] | None:
        return self.process.proc if self.process is not None else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        # a new incarnation: the supervisor owns the restart policy (it probes health, not only exits)
        self.process = SupervisedProcess(f"replica {self.spec.name}", self.spec.argv, self.spec.log_path,
                                         env=self.spec.env, cores=self.spec.cores)
        self.process.start()
        self.started_at = time.time()
        self.ready_at = None
        self.state = "starting"
        log.info("replica %s starting: pid %s, %s, cores %s", self.spec.name, self.pid, self.spec.url,
                 self.spec.cores or "all")

    def exited(self) -> int | None:
        return None if self.process is None else self.process.exit_code()

    def healthy(self, timeout_s: float) -> bool:
        try:
            return self._client.get(f"{self.spec.url}/health", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def warm_up(self, model: str, timeout_s: float) -> str | None:
        """One short greedy completion; None once answered, else what was wrong (an HTTP status
        and the start of the answer). Raises ``httpx.HTTPError`` when the server does not answer."""
        response = self._client.post(f"{self.spec.url}/v1/completions", timeout=timeout_s, json={
            "model": model, "prompt": WARM_UP_PROMPT, "max_tokens": WARM_UP_TOKENS, "temperature": 0})
        if response.status_code == 200:
            return None
        return f"HTTP {response.status_code}: {response.text[:200]}"

    def in_flight(self) -> float | None:
        figures = fetch_figures(self.spec.url, timeout_s=1.0)
        return None if figures is None else figures.running + figures.waiting

    def drain(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) until the replica has no running or waiting request."""
        if self.exited() is not None:
            return
        self.state = "draining"
        deadline = time.monotonic() + timeout_s
        idle = 0
        while time.monotonic() < deadline:
            pending = self.in_flight()
            if pending is None:
                return  # no answer: nothing left to wait for
            # Twice idle in a row: a request that reached the API server but not yet the engine's
            # counters shows up by the second look.
            idle = idle + 1 if pending == 0 else 0
            if idle >= 2:
                return
            time.sleep(0.2)
        log.warning("replica %s still had requests after %.0fs of draining", self.spec.name, timeout_s)

    def stop(self, drain_timeout_s: float, terminate_timeout_s: float) -> None:
        """Drain, then stop the whole process group: after a crash of the API server its engine
        core and workers still run in the group and must go too."""
        if self.process is None or self.process.stopped:
            return
        if drain_timeout_s > 0:
            self.drain(drain_timeout_s)
        self.process.stop_timeout_s = terminate_timeout_s
        self.process.stop()
        self.state = "stopped"

    def close(self) -> None:
        self._client.close()
