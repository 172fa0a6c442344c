"""The stack configuration: one YAML file, typed and validated; CLI flags override it.

Example (every key optional)::

    model: smollm2-135m-instruct      # bundled name, local HF folder, or hub id org/name
    replicas: 2
    speculative: {method: ngram, num_speculative_tokens: 6, prompt_lookup_max: 5}
    engine: {max_model_len: 2048, kv_cache_gib: 1, base_port: 8101}
    gateway: {enabled: true, port: 8080}
    autoscaling: {min_replicas: 1, max_replicas: 2, metric: waiting, target: 3}   # see docs/autoscale.md
    batch: {enabled: true}            # OpenAI Files + Batch API on the gateway's base URL

Unknown keys are errors, so a misspelt key never silently vanishes. Errors name the key, the bad
value and what would be valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferstack.autoscale.policy import AutoscalingPolicy
from inferstack.batch.settings import BatchSettings
from inferstack.configfile import read_yaml_mapping, validate
from inferstack.engine.settings import EngineSettings
from inferstack.engine.speculative import SpeculativeSettings
from inferstack.gateway.settings import GatewaySettings

__all__ = ["StackBatchSettings", "StackConfig", "StackGatewaySettings", "load_config"]


class StackGatewaySettings(GatewaySettings):
    """The gateway in front of the local replicas (Envoy on ``port``, default 8080)."""

    enabled: bool = Field(True, description="Serve through Envoy + the endpoint picker.")


class StackBatchSettings(BatchSettings):
    """The batch service (OpenAI Files + Batch API) behind the gateway; needs the gateway."""

    enabled: bool = Field(True, description="Serve /v1/files and /v1/batches on the gateway's base URL "
                          "(ignored with the gateway disabled); lines run at the lowest priority.")


class StackConfig(BaseModel):
    """Everything `inferstack up` needs."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m-instruct", description="Bundled name, local folder or hub id.")
    served_model_name: str | None = Field(None, description="Name clients use (default: derived).")
    replicas: int = Field(1, ge=1, le=64, description="Number of vLLM replicas.")
    engine: EngineSettings = Field(default_factory=EngineSettings)
    speculative: SpeculativeSettings = Field(
        default_factory=SpeculativeSettings, description="Speculative decoding (default: ngram)."
    )
    gateway: StackGatewaySettings = Field(default_factory=StackGatewaySettings)
    autoscaling: AutoscalingPolicy | None = Field(
        None,
        description="Autoscaling policy (inferstack.autoscale): the same section renders the HPA for "
        "GKE and drives `autoscale simulate`; `up` does not scale the local stack yet (it runs "
        "`replicas` and says so).",
    )
    batch: StackBatchSettings = Field(default_factory=StackBatchSettings)


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> StackConfig:
    """Load the YAML file (if any), deep-merge ``overrides`` (from CLI flags), validate."""
    data = read_yaml_mapping(path, "config file") if path is not None else {}
    if overrides:
        data = _merge(data, overrides)
    return validate(StackConfig, data, str(path) if path is not None else "config")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
