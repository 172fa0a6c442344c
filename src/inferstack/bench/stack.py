"""Defaults from the running local stack (``inferstack up``): target, replicas, spec method.

Reads the supervisor's state file (``inferstack.stack.state.StateFile``); only a stack whose
supervisor is alive counts. Invariant: this never starts or changes the stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from inferstack.errors import ConfigError

if TYPE_CHECKING:  # bench reads the stack's status only when no --target is given
    from inferstack.stack.status import StackStatus

__all__ = ["StackDefaults", "local_stack_defaults"]


class StackDefaults(BaseModel):
    """What the running stack tells a benchmark."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="Base URL (no /v1) clients use: the gateway, else replica 1.")
    model: str | None = Field(default=None, description="Served model name.")
    tokenizer: Path | None = Field(default=None, description="Local model folder, when it is one.")
    metrics_urls: tuple[str, ...] = Field(default=(), description="Replica base URLs.")
    spec_method: str | None = Field(default=None, description="Speculative method of the replicas.")
    routing: str = Field(description="'gateway (endpoint picker)' or 'direct'.")


def local_stack_defaults(state: StackStatus | None = None) -> StackDefaults:
    """Defaults from ``state`` (the running stack's status; read from its state file when None)."""
    if state is None:
        from inferstack.stack.state import StateFile  # local: bench depends on engine only here

        state = StateFile().live()
    if state is None or not state.base_url:
        raise ConfigError(
            "no --target given and no running local stack found; start it with `inferstack up` "
            "or pass --target URL (e.g. http://127.0.0.1:8101)"
        )
    base = state.base_url.rstrip("/")
    base = base[: -len("/v1")] if base.endswith("/v1") else base
    source = state.model_source
    tokenizer = Path(source) if source and Path(source).is_dir() else None
    return StackDefaults(
        target=base,
        model=state.model,
        tokenizer=tokenizer,
        metrics_urls=tuple(r.url.rstrip("/") for r in state.replicas if r.url),
        spec_method=state.speculative,
        routing="gateway (endpoint picker)" if state.gateway else "direct",
    )
