"""Typed settings of the batch service (OpenAI Files + Batch API) and its dispatcher.

``BatchSettings`` is what ``python -m inferstack.batch --config FILE`` reads and what the stack
config's ``batch:`` section extends (with ``enabled``). Invariants: unknown keys are errors; every
field has a default and a description; the concurrency bounds are ordered (min <= initial <= max).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from inferstack.configfile import read_yaml_mapping, validate

__all__ = ["BATCH_ENDPOINTS", "BatchSettings", "DispatchSettings", "load_batch_settings"]

Port = Annotated[int, Field(ge=1, le=65535)]

# The endpoints a batch (and each of its lines) may name; what vLLM serves for them.
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")


class DispatchSettings(BaseModel):
    """How lines are sent through the gateway: lowest priority, adaptive, bounded retries."""

    model_config = ConfigDict(extra="forbid")

    objective: str = Field(default="batch", description="InferenceObjective named in the "
                           "x-gateway-inference-objective header of every line (sheddable: the picker "
                           "answers 429 under saturation).")
    priority: int = Field(default=-1, lt=0, description="Priority of that objective, declared to the "
                          "picker by the stack; < 0 = sheddable.")
    min_concurrency: int = Field(default=1, ge=1, description="Lines in flight never drop below this.")
    initial_concurrency: int = Field(default=2, ge=1, description="Lines in flight at start.")
    max_concurrency: int = Field(default=16, ge=1, description="Lines in flight never exceed this.")
    increase_every: int = Field(default=4, ge=1, description="Additive increase: +1 line in flight after "
                                "this many successes in a row at the current limit (AIMD).")
    latency_tolerance: float | None = Field(default=1.5, gt=1, description="Latency brake: while lines take "
                                            "more than this times the best seconds per output token seen, "
                                            "concurrency does not grow and steps down (online traffic is using "
                                            "the engines); null turns the brake off (AIMD on 429 only).")
    max_attempts: int = Field(default=4, ge=1, le=20, description="Attempts per line on transient failures "
                              "(connect errors, timeouts, 5xx other than 503); then the line goes to the error "
                              "file. 429 (shed) and 503 (no replica ready) are no attempt: they mean 'later'.")
    backoff_initial_s: float = Field(default=0.25, gt=0, description="First pause after a 429 or failure.")
    backoff_max_s: float = Field(default=10.0, gt=0, description="Pauses double up to this.")
    request_timeout_s: float = Field(default=600.0, gt=0, description="Timeout of one line's request.")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Connect timeout to the gateway.")

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> DispatchSettings:
        if not self.min_concurrency <= self.initial_concurrency <= self.max_concurrency:
            raise ValueError(f"concurrency bounds must satisfy min_concurrency ({self.min_concurrency}) <= "
                             f"initial_concurrency ({self.initial_concurrency}) <= max_concurrency "
                             f"({self.max_concurrency})")
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError(f"backoff_initial_s ({self.backoff_initial_s}) cannot exceed backoff_max_s "
                             f"({self.backoff_max_s})")
        return self


class BatchSettings(BaseModel):
    """The batch service: API on ``host:port``, state in ``state_dir``, lines sent to ``gateway_url``."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address the batch API binds.")
    port: Port | None = Field(default=None, description="Port of the batch API; Envoy routes /v1/files and "
                              "/v1/batches of the gateway's base URL here, so clients never use it "
                              "directly (default: a free loopback port chosen when the stack starts).")
    state_dir: Path | None = Field(default=None, description="SQLite database + files (default: "
                                   "<stack state dir>/batch).")
    gateway_url: str | None = Field(default=None, description="Where lines are sent, e.g. "
                                    "http://127.0.0.1:8080 (the stack sets it to its gateway).")
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1, description="Largest upload accepted "
                                "(413 above it); the OpenAI limit is 200 MB.")
    max_lines: int = Field(default=50_000, ge=1, description="Most requests in one batch input file.")
    max_line_errors: int = Field(default=100, ge=1, description="Most validation errors reported per batch.")
    poll_interval_s: float = Field(default=0.2, gt=0, description="How often the dispatcher looks for new "
                                   "or cancelled batches when idle.")
    dispatcher_stall_s: float = Field(default=120.0, gt=0, description="/health answers 503, and the "
                                      "service exits so that the stack restarts it, when the dispatcher's loop "
                                      "has ended or completed no pass for this long (a pass completes at least "
                                      "every dispatch.backoff_max_s).")
    ready_timeout_s: float = Field(default=30.0, gt=0, description="How long start() waits for /health.")
    stop_timeout_s: float = Field(default=10.0, gt=0, description="terminate -> wait this long -> kill.")
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings, description="Line dispatch.")
    auth_file: Path | None = Field(default=None, description="API keys (the gateway's key file): every call "
                                   "needs `Authorization: Bearer <key>` (401 otherwise); files and batches belong "
                                   "to the key's tenant (others get 404 and do not list them). None: the tenant "
                                   "is the x-gateway-inference-fairness-id header ('' without it).")
    gateway_key_file: Path | None = Field(default=None, description="The key lines are sent to the gateway "
                                          "with (the stack's service key), each naming its batch's tenant in "
                                          "x-gateway-inference-fairness-id.")


def load_batch_settings(path: Path) -> BatchSettings:
    """Read a batch-service YAML file; errors name the file, the key and the problem."""
    return validate(BatchSettings, read_yaml_mapping(path, "batch config"), str(path))
