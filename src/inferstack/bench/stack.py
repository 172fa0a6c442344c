"""Defaults from the running local stack (``inferstack up``): target, replicas, spec method.

Reads the supervisor's state file (``inferstack.stack.state.StateFile``); only a stack whose
supervisor is alive counts. Invariant: this never starts or changes the stack.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from inferstack.errors import ConfigError

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


def local_stack_defaults(state: dict | None = None) -> StackDefaults:  # type: ignore[type-arg]
    """Defaults from ``state`` (the state file's content; read from disk when None)."""
    if state is None:
        from inferstack.stack.state import StateFile  # local: bench depends on engine only here

        state = StateFile().live()
    if not state or not state.get("base_url"):
        raise ConfigError(
            "no --target given and no running local stack found; start it with `inferstack up` "
            "or pass --target URL (e.g. http://127.0.0.1:8101)"
        )
    base = str(state["base_url"]).rstrip("/")
    base = base[: -len("/v1")] if base.endswith("/v1") else base
    source = state.get("model_source")
    tokenizer = Path(source) if source and Path(source).is_dir() else None
    return StackDefaults(
        target=base,
        model=state.get("model"),
        tokenizer=tokenizer,
        metrics_urls=tuple(r["url"].rstrip("/") for r in state.get("replicas", []) if r.get("url")),
        spec_method=state.get("speculative"),
        routing="gateway (endpoint picker)" if state.get("gateway") else "direct",
    )
