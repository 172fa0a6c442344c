"""What the gateway's processes report (the ``gateway`` part of the stack's status): typed, and
light to import (the stack's status file is read by every CLI call; the processes' code is not)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["EnvoyStatus", "EppStatus", "GatewayStatus", "ProcessStatus"]


class ProcessStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pid: int | None
    state: str  # stopped | running | exited(CODE)
    restarts: int
    log: str


class EnvoyStatus(ProcessStatus):
    port: int
    admin_port: int


class EppStatus(ProcessStatus):
    grpc_port: int
    metrics_port: int


class GatewayStatus(BaseModel):
    """What ``Gateway.status()`` reports (the ``gateway`` part of the stack's status)."""
    model_config = ConfigDict(extra="forbid")
    state: str  # stopped | starting | running | degraded | failed
    url: str
    base_url: str
    run_dir: str
    envoy: EnvoyStatus
    epp: EppStatus
    epp_failure_mode: str
