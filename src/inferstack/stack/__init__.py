"""The local stack as desired state: what `inferstack up` runs and `scale`/`reconfigure` change.

``engine`` knows one vLLM process; this package orchestrates the whole stack: the config
(``StackConfig``), the supervisor that reconciles replicas with the desired count and settings
(``Supervisor``), the local autoscaler (``LocalAutoscaler``), the control queue the CLI uses
(``submit_request``) and the state file ``status``/``down`` read (``StateFile``). The gateway learns
the ready replicas through the endpoints file the supervisor writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferstack.lazy import lazy_attributes

# The door opens lazily (PEP 562): `status`, `down` and `batch` need the state file, not the
# supervisor (which brings the gateway, grpc and the engine code: ~0.4 s of every CLI call).
_EXPORTS = {
    "LocalAutoscaler": "autoscaler", "StackConfig": "config", "load_config": "config", "merge_config": "config",
    "submit_request": "control", "StateFile": "state", "Supervisor": "supervisor",
}

__all__ = ["LocalAutoscaler", "StackConfig", "StateFile", "Supervisor", "load_config", "merge_config",
           "submit_request"]

if TYPE_CHECKING:
    from inferstack.stack.autoscaler import LocalAutoscaler
    from inferstack.stack.config import StackConfig, load_config, merge_config
    from inferstack.stack.control import submit_request
    from inferstack.stack.state import StateFile
    from inferstack.stack.supervisor import Supervisor

__getattr__ = lazy_attributes(__name__, _EXPORTS)
