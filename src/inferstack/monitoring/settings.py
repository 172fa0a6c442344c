"""The ``monitoring:`` section of the stack config: a Prometheus the stack runs beside itself."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MonitoringSettings", "MonitoringStatus"]


class MonitoringSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Run Prometheus (Debian's `prometheus` package) scraping every "
                          "replica, the picker, Envoy, the batch service and the supervisor; `up --monitoring`.")
    port: int = Field(9099, ge=1, le=65535, description="Prometheus's web UI and API (127.0.0.1); not "
                      "Prometheus's usual 9090, which the endpoint picker's /metrics has by default.")
    scrape_interval_s: float = Field(5.0, ge=0.5, le=300, description="Scrape and rule-evaluation interval.")
    retention_time: str = Field("2d", pattern=r"^[0-9]+(ms|s|m|h|d|w|y)$",
                                description="Prometheus's --storage.tsdb.retention.time.")
    retention_size: str = Field("512MB", pattern=r"^[0-9]+(B|KB|MB|GB|TB)$",
                                description="Prometheus's --storage.tsdb.retention.size.")

    def interval(self) -> str:
        """The scrape interval as Prometheus writes durations."""
        ms = round(self.scrape_interval_s * 1000)
        return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


class MonitoringStatus(BaseModel):
    """The ``monitoring`` part of the stack's status (``status --json``: ``monitoring.url``)."""
    model_config = ConfigDict(extra="forbid")
    state: str
    url: str  # Prometheus's base URL (UI and /api/v1)
    pid: int | None
    restarts: int
    log: str
    data_dir: str
    supervisor_metrics_url: str | None
