"""How the local stack wires the batch service in (used by ``inferstack up``).

- ``resolve_batch(batch, gateway_url, state_root, taken)``: the service's settings with a concrete
  port (unless configured, a free loopback port, none of the stack's configured ``taken`` ones),
  its state dir (``<state dir>/batch`` unless configured; it outlives ``down``, so an ``up``
  resumes the batches in progress) and the gateway URL its lines go to.
- ``gateway_with_batch(gateway, batch)``: the gateway's settings with ``batch_port`` (Envoy's route
  to the service) and the sheddable ``batch`` objective declared to the picker (unless the config
  declares an objective of that name itself).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from inferstack.batch.settings import BatchSettings
from inferstack.gateway.settings import GatewaySettings, ObjectiveSettings
from inferstack.process import free_port

__all__ = ["gateway_with_batch", "resolve_batch"]


def resolve_batch(batch: BatchSettings, gateway_url: str, state_root: Path,
                  taken: Collection[int] = ()) -> BatchSettings:
    """``taken``: ports the stack's other servers are configured to bind (not bound yet)."""
    data = batch.model_dump(exclude={"enabled"})
    data["port"] = batch.port or free_port(batch.host, avoid=taken)
    data["state_dir"] = batch.state_dir or Path(state_root) / "batch"
    data["gateway_url"] = batch.gateway_url or gateway_url
    return BatchSettings.model_validate(data)


def gateway_with_batch(gateway: GatewaySettings, batch: BatchSettings) -> GatewaySettings:
    if batch.port is None:
        raise ValueError("resolve the batch port first (resolve_batch)")
    out = gateway.model_copy(deep=True)
    out.batch_port = batch.port
    objective = batch.dispatch.objective
    if not any(o.name == objective for o in out.epp.objectives):
        out.epp.objectives.append(ObjectiveSettings(name=objective, priority=batch.dispatch.priority))
    return out
