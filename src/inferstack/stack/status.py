"""What the stack publishes: one typed, versioned status model (the state file's content).

The supervisor builds ``StackStatus`` from parts each component supplies (``Gateway.status()``
-> ``GatewayStatus``, ``BatchService.status()`` -> ``BatchServiceStatus``, the autoscaler's
``AutoscalerStatus``); ``status``, ``down``, ``scale``, ``batch`` and ``bench`` read attributes, never
string keys. ``status --json`` prints ``model_dump`` of it, so the JSON shape is this model's.

Invariant: a state file written by another schema version fails loudly (``StateSchemaError``
naming both versions and what to do), never with a KeyError in some reader.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferstack.batch import BatchServiceStatus
from inferstack.engine.replica import ReplicaState
from inferstack.errors import InferstackError
from inferstack.gateway import GatewayStatus
from inferstack.monitoring import MonitoringStatus

__all__ = ["STATUS_SCHEMA_VERSION", "AdaptersStatus", "AutoscalerStatus", "ControlAnswer", "ReplicaStatus",
           "StackEvent", "StackStatus", "StateSchemaError", "parse_status"]

STATUS_SCHEMA_VERSION = 1


class StateSchemaError(InferstackError):
    """The state file was written by another version of inferstack."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReplicaStatus(_Part):
    name: str
    url: str
    port: int
    pid: int | None
    state: ReplicaState
    generation: int
    retiring: bool
    restarts: int
    last_exit: str | None
    started_at: float
    ready_at: float | None
    cores: list[int]
    log: str


class AutoscalerStatus(_Part):
    policy: str
    min_replicas: int
    max_replicas: int
    sync_period_s: float
    last_decision: str | None
    last_reason: str | None


class AdaptersStatus(_Part):
    declared: dict[str, str]  # adapter name -> source
    file: str


class StackEvent(_Part):
    at: float  # wall clock
    kind: str
    message: str


class ControlAnswer(_Part):
    """The supervisor's answer to a queued control request (scale, reconfigure, adapters)."""
    ok: bool
    message: str
    desired_replicas: int
    generation: int
    at: float


class StackStatus(_Part):
    schema_version: int = STATUS_SCHEMA_VERSION
    state: str  # starting | ready | stopping | failed
    error: str | None = None
    supervisor_pid: int
    started_at: float | None
    base_url: str
    model: str
    model_source: str
    speculative: str
    dtype: str
    dtype_reason: str
    config_path: str | None
    endpoints_file: str
    desired_replicas: int
    ready_replicas: int
    generation: int
    replicas: list[ReplicaStatus]
    autoscaling: AutoscalerStatus | None = None
    adapters: AdaptersStatus | None = None
    events: list[StackEvent] = Field(default_factory=list)
    requests: dict[str, ControlAnswer] = Field(default_factory=dict)
    gateway: GatewayStatus | None = None
    batch: BatchServiceStatus | None = None
    monitoring: MonitoringStatus | None = None


def parse_status(data: object, source: str) -> StackStatus:
    """The status in ``data`` (a state file's JSON); StateSchemaError when another version wrote it."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != STATUS_SCHEMA_VERSION:
        raise StateSchemaError(
            f"{source} was written by another inferstack (status schema {version!r}; this one reads "
            f"{STATUS_SCHEMA_VERSION}); stop that stack with the inferstack that started it, or remove "
            "the file if no stack runs")
    try:
        return StackStatus.model_validate(data)
    except ValidationError as exc:
        raise StateSchemaError(f"{source} does not match status schema {STATUS_SCHEMA_VERSION}: {exc}") from None


