"""``BatchService``: the batch service as one supervised process of the stack.

    svc = BatchService(BatchSettings(gateway_url=..., state_dir=...), run_dir=PATH)
    svc.check_ports()   # PortInUseError if the API port is taken
    svc.start()         # writes run_dir/batch.yaml, starts `python -m inferstack.batch`, waits for
                        # /health; ReplicaStartError with the log tail if it exits or is not ready
    svc.heal()          # restarts it if it exited (delay doubling up to 30 s, reset after a minute)
    svc.status()        # BatchServiceStatus (state, url, pid, port, restarts, log, state_dir, gateway_url)
    svc.stop()          # terminate -> wait stop_timeout_s -> kill

It has the shape the supervisor expects of a front end (``url``, ``check_ports``, ``start``,
``stop``, ``status``, ``heal``). A killed service loses nothing: its state is in SQLite and a
restart resumes the batches in progress.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from pydantic import BaseModel, ConfigDict

from inferstack.batch.settings import BatchSettings
from inferstack.errors import PortInUseError, ReplicaStartError
from inferstack.process import log_tail, port_is_free

__all__ = ["BatchService", "BatchServiceStatus"]

log = logging.getLogger(__name__)

_RESTART_BACKOFF_MAX_S = 30.0
_STABLE_AFTER_S = 60.0


class BatchServiceStatus(BaseModel):
    """What ``BatchService.status()`` reports (the ``batch`` part of the stack's status)."""
    model_config = ConfigDict(extra="forbid")
    state: str  # stopped | starting | running | failed | exited(CODE)
    url: str
    pid: int | None
    port: int | None
    restarts: int
    log: str
    state_dir: str
    gateway_url: str | None


class BatchService:
    def __init__(self, settings: BatchSettings, run_dir: Path, python: Path | None = None) -> None:
        if settings.state_dir is None or settings.gateway_url is None:
            raise ValueError("BatchService needs settings.state_dir and settings.gateway_url")
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.python = Path(python) if python is not None else Path(sys.executable)
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self.restarts = 0
        self.state = "stopped"

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "batch.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def check_ports(self) -> None:
        s = self.settings
        if s.port is None:
            raise ValueError("BatchService needs settings.port (resolve_batch chooses one)")
        if not port_is_free(s.host, s.port):
            raise PortInUseError(f"batch API port {s.host}:{s.port} is already in use; stop what holds it "
                                 f"(e.g. `ss -ltnp | grep :{s.port}`) or choose another (batch.port)")

    def healthy(self, timeout_s: float = 1.0) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def _spawn(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "batch.yaml"
        config.write_text(yaml.safe_dump(self.settings.model_dump(mode="json"), sort_keys=False))
        with open(self.log_path, "ab") as logf:
            self._proc = subprocess.Popen([str(self.python), "-m", "inferstack.batch", "--config", str(config)],
                                          stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        self._started_at = time.monotonic()
        log.info("batch service started, pid %d", self._proc.pid)

    def start(self) -> None:
        self.check_ports()
        self.state = "starting"
        try:
            self._spawn()
            deadline = time.monotonic() + self.settings.ready_timeout_s
            assert self._proc is not None
            while not self.healthy(0.5):
                if self._proc.poll() is not None:
                    raise ReplicaStartError(f"batch service (pid {self._proc.pid}) exited with code "
                                            f"{self._proc.returncode} while starting; log: {self.log_path}",
                                            log_tail(self.log_path))
                if time.monotonic() > deadline:
                    raise ReplicaStartError(f"batch service (pid {self._proc.pid}) not ready after "
                                            f"{self.settings.ready_timeout_s:.0f} s; log: {self.log_path}",
                                            log_tail(self.log_path))
                time.sleep(0.1)
        except BaseException:
            self.stop()
            self.state = "failed"
            raise
        self.state = "running"
        log.info("batch service pid %d is ready at %s", self._proc.pid, self.url)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(self.settings.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    log.warning("batch service pid %d ignored SIGTERM; killing", proc.pid)
                    proc.kill()
                    proc.wait()
            log.info("batch service pid %d stopped (code %s)", proc.pid, proc.returncode)
        self.state = "stopped"

    def heal(self) -> list[str]:
        """Restart the service if it exited (without waiting for readiness); returns ["batch"] then."""
        if self.state != "running" or self._proc is None:
            return []
        now = time.monotonic()
        if self._proc.poll() is None:
            if now - self._started_at > _STABLE_AFTER_S:
                self._backoff_s = 0.0
            return []
        if now < self._retry_at:
            return []
        log.warning("batch service pid %d exited with code %s; restarting it (log: %s)", self._proc.pid,
                    self._proc.returncode, self.log_path)
        self.restarts += 1
        self._backoff_s = min(_RESTART_BACKOFF_MAX_S, self._backoff_s * 2 or 0.5)
        self._retry_at = now + self._backoff_s
        try:
            self._spawn()
        except OSError as exc:
            log.error("cannot restart the batch service: %s; next try in %.1fs", exc, self._backoff_s)
            return []
        return ["batch"]

    def status(self) -> BatchServiceStatus:
        proc = self._proc
        if proc is None:
            state = self.state
        else:
            state = "running" if proc.poll() is None else f"exited({proc.returncode})"
        return BatchServiceStatus(state=state, url=self.url, pid=self.pid, port=self.settings.port,
                                  restarts=self.restarts, log=str(self.log_path),
                                  state_dir=str(self.settings.state_dir), gateway_url=self.settings.gateway_url)

    def __enter__(self) -> BatchService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
