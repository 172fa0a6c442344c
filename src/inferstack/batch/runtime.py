"""``BatchService``: the batch service as one supervised process of the stack.

    svc = BatchService(BatchSettings(gateway_url=..., state_dir=...), run_dir=PATH)
    svc.check_ports()   # PortInUseError if the API port is taken
    svc.start()         # writes run_dir/batch.yaml, starts `python -m inferstack.batch`, waits for
                        # /health; ReplicaStartError with the log tail if it exits or is not ready
    svc.heal()          # restarts it if it exited (delay doubling up to 30 s, reset after a minute)
    svc.status()        # BatchServiceStatus (state, url, pid, port, restarts, log, state_dir, gateway_url)
    svc.stop()          # its whole process group: SIGTERM -> wait stop_timeout_s -> SIGKILL

It has the shape the supervisor expects of a front end (``url``, ``check_ports``, ``start``,
``stop``, ``status``, ``heal``). A killed service loses nothing: its state is in SQLite and a
restart resumes the batches in progress.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import httpx
import yaml
from pydantic import BaseModel, ConfigDict

from inferstack.batch.settings import BatchSettings
from inferstack.errors import PortInUseError
from inferstack.process import SupervisedProcess, port_is_free

__all__ = ["BatchService", "BatchServiceStatus"]

log = logging.getLogger(__name__)


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
        self.process: SupervisedProcess | None = None
        self.state = "stopped"

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "batch.log"

    @property
    def pid(self) -> int | None:
        """The running service's pid (None once stopped)."""
        return self.process.pid if self.process is not None and not self.process.stopped else None

    @property
    def restarts(self) -> int:
        return self.process.restarts if self.process is not None else 0

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

    def start(self) -> None:
        self.check_ports()
        self.state = "starting"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "batch.yaml"
        config.write_text(yaml.safe_dump(self.settings.model_dump(mode="json"), sort_keys=False))
        self.process = SupervisedProcess(
            "batch service", [str(self.python), "-m", "inferstack.batch", "--config", str(config)], self.log_path,
            stop_timeout_s=self.settings.stop_timeout_s)
        try:
            self.process.start()
            self.process.wait_ready(lambda: self.healthy(0.5), time.monotonic() + self.settings.ready_timeout_s,
                                    poll_s=0.1)
        except BaseException:
            self.stop()
            self.state = "failed"
            raise
        self.state = "running"
        log.info("batch service pid %d is ready at %s", self.pid, self.url)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.state = "stopped"

    def heal(self, now: float | None = None) -> list[str]:
        """Restart the service if it exited (without waiting for readiness); returns ["batch"] then.
        Its watchdog exits it when the dispatcher's loop ended or stalled, so that counts too."""
        if self.state != "running" or self.process is None:
            return []
        return ["batch"] if self.process.heal(now) else []

    def status(self) -> BatchServiceStatus:
        state = self.process.state if self.process is not None and not self.process.stopped else self.state
        return BatchServiceStatus(state=state, url=self.url, pid=self.pid, port=self.settings.port,
                                  restarts=self.restarts, log=str(self.log_path),
                                  state_dir=str(self.settings.state_dir), gateway_url=self.settings.gateway_url)

    def __enter__(self) -> BatchService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
