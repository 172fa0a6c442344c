"""Prometheus as one more supervised process of the local stack.

``prometheus_config`` (pure) writes what it scrapes: the replicas from a file the supervisor
rewrites as they come and go (``file_sd``: Prometheus re-reads it, no restart), the picker's
/metrics, Envoy's admin /stats/prometheus, the batch service's and the supervisor's /metrics, and
itself; the rules of ``monitoring/rules.py``. ``Prometheus`` runs Debian's ``prometheus`` binary with
its data in the stack's run dir (retention bounded by time and size) on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from inferstack.errors import InferstackError
from inferstack.monitoring.rules import rules_document
from inferstack.monitoring.settings import MonitoringSettings, MonitoringStatus
from inferstack.process import SupervisedProcess, port_is_free

__all__ = ["Prometheus", "ScrapeTargets", "find_prometheus", "prometheus_config",
           "write_replica_targets"]

_PACKAGE = "prometheus"  # Debian's package: /usr/bin/prometheus and /usr/bin/promtool


def find_prometheus(program: str = "prometheus") -> Path:
    """The ``prometheus`` (or ``promtool``) binary, or an error that names the package."""
    found = shutil.which(program)
    if found is None:
        raise InferstackError(f"`{program}` is not installed: monitoring runs Debian's `{_PACKAGE}` package "
                              f"(`make setup` installs it; by hand: apt-get install {_PACKAGE})")
    return Path(found)


@dataclass(frozen=True, slots=True)
class ScrapeTargets:
    replicas_file: Path  # file_sd JSON: the replicas, rewritten by the supervisor
    pickers: tuple[str, ...] = ()  # host:port of each picker's /metrics page (gateway.pickers)
    envoy_admin: str | None = None  # host:port of each /metrics page, as the ones below
    batch: str | None = None
    supervisor: str | None = None


def prometheus_config(settings: MonitoringSettings, targets: ScrapeTargets, rules_file: Path) -> dict[str, object]:
    interval = settings.interval()
    jobs: list[dict[str, object]] = [{
        "job_name": "vllm",
        "file_sd_configs": [{"files": [str(targets.replicas_file)], "refresh_interval": interval}],
    }]
    if targets.pickers:
        jobs.append({"job_name": "picker", "static_configs": [{"targets": list(targets.pickers)}]})
    for job, address, path in (("envoy", targets.envoy_admin, "/stats/prometheus"),
                               ("batch", targets.batch, "/metrics"),
                               ("supervisor", targets.supervisor, "/metrics"),
                               ("prometheus", f"127.0.0.1:{settings.port}", "/metrics")):
        if address is not None:
            jobs.append({"job_name": job, "metrics_path": path, "static_configs": [{"targets": [address]}]})
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval,
                       "external_labels": {"stack": "inferstack"}},
            "rule_files": [str(rules_file)], "scrape_configs": jobs}


def write_replica_targets(path: Path, replicas: list[tuple[str, str]]) -> None:
    """Atomically write the file_sd list of ``(name, host:port)`` replicas (labelled ``replica``)."""
    doc = [{"targets": [address], "labels": {"replica": name}} for name, address in replicas]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


class Prometheus:
    """The stack's Prometheus (check_ports -> start -> heal ... -> stop, as the gateway's parts)."""

    def __init__(self, settings: MonitoringSettings, targets: ScrapeTargets, run_dir: Path) -> None:
        self.settings = settings
        self.targets = targets
        self.run_dir = run_dir
        self.url = f"http://127.0.0.1:{settings.port}"
        self.config_path = run_dir / "prometheus.yml"
        self.rules_path = run_dir / "rules.yml"
        self.data_dir = run_dir / "data"
        self.process: SupervisedProcess | None = None

    def check_ports(self) -> None:
        find_prometheus()
        if not port_is_free("127.0.0.1", self.settings.port):
            raise InferstackError(f"monitoring port {self.settings.port} (Prometheus) is in use; choose another "
                                  "with monitoring.port in the config")

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.rules_path.write_text(yaml.safe_dump(rules_document(), sort_keys=False))
        self.config_path.write_text(yaml.safe_dump(
            prometheus_config(self.settings, self.targets, self.rules_path), sort_keys=False))
        s = self.settings
        self.process = SupervisedProcess("prometheus", [
            str(find_prometheus()), f"--config.file={self.config_path}", f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={s.retention_time}", f"--storage.tsdb.retention.size={s.retention_size}",
            f"--web.listen-address=127.0.0.1:{s.port}", "--web.enable-lifecycle"],
            self.run_dir / "prometheus.log", stop_timeout_s=10.0)
        self.process.start()
        self.process.wait_ready(self._ready, time.monotonic() + 60.0, poll_s=0.2)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def heal(self) -> list[str]:
        if self.process is not None and self.process.heal():
            return [f"prometheus restarted (exited; log {self.process.log_path})"]
        return []

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def status(self) -> MonitoringStatus:
        p = self.process
        return MonitoringStatus(state=p.state if p is not None else "stopped", url=self.url,
                                pid=p.pid if p is not None else None, restarts=p.restarts if p is not None else 0,
                                log=str(self.run_dir / "prometheus.log"), data_dir=str(self.data_dir),
                                supervisor_metrics_url=(f"http://{self.targets.supervisor}/metrics"
                                                        if self.targets.supervisor else None))
