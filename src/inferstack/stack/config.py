"""The stack configuration: one YAML file, typed and validated; CLI flags override it.

Example (every key optional)::

    model: smollm2-135m-instruct      # bundled name, local HF folder, or hub id org/name
    replicas: 2
    speculative: {method: ngram, num_speculative_tokens: 6, prompt_lookup_max: 5}
    engine: {max_model_len: 2048, kv_cache_gib: 1, base_port: 8101}
    gateway: {enabled: true, port: 8080}
    autoscaling: {min_replicas: 1, max_replicas: 2, metric: waiting, target: 3}   # on: see docs/autoscale.md
    batch: {enabled: true}            # OpenAI Files + Batch API on the gateway's base URL
    auth: {file: keys.yaml}           # API keys and tenants (inferstack.auth); `up --auth-file`
    lora: {enabled: true, max_loras: 2, adapters: {json-mode: /path/to/adapter}}   # inferstack.lora
    monitoring: {enabled: true, port: 9099, scrape_interval_s: 5}   # Prometheus; `up --monitoring`

Unknown keys are errors, so a misspelt key never silently vanishes. Errors name the key, the bad
value and what would be valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inferstack.auth import AuthSettings
from inferstack.autoscale.policy import AutoscalingPolicy
from inferstack.batch.settings import BatchSettings
from inferstack.configfile import read_yaml_mapping, validate
from inferstack.engine.settings import EngineSettings
from inferstack.engine.speculative import SpeculativeSettings
from inferstack.gateway import GatewaySettings, HoldSettings, check_exposure
from inferstack.lora.settings import LoraSettings
from inferstack.monitoring import MonitoringSettings

__all__ = ["StackBatchSettings", "StackConfig", "StackGatewaySettings", "load_config", "merge_config"]


class StackGatewaySettings(GatewaySettings):
    """The gateway in front of the local replicas (Envoy on ``port``, default 8080)."""

    enabled: bool = Field(True, description="Serve through Envoy + the endpoint picker.")
    hold: HoldSettings = Field(
        default_factory=lambda: HoldSettings(enabled=True),
        description="The picker holds requests while no replica is ready (on by default here: the "
        "stack can be scaled to zero, and a crashed replica restarts), answering 503 after timeout_s.",
    )
    # the stack's keys are its `auth:` section: StackConfig checks the exposure with them
    keys_checked_here: ClassVar[bool] = False


class StackBatchSettings(BatchSettings):
    """The batch service (OpenAI Files + Batch API) behind the gateway; needs the gateway."""

    enabled: bool = Field(True, description="Serve /v1/files and /v1/batches on the gateway's base URL "
                          "(ignored with the gateway disabled); lines run at the lowest priority.")


class StackConfig(BaseModel):
    """Everything `inferstack up` needs."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m-instruct", description="Bundled name, local folder or hub id.")
    served_model_name: str | None = Field(None, description="Name clients use (default: derived).")
    replicas: int = Field(1, ge=0, le=64, description="vLLM replicas at start (0: none until the first "
                          "request, which the gateway holds while one starts; `inferstack scale` changes it).")
    engine: EngineSettings = Field(default_factory=EngineSettings)
    speculative: SpeculativeSettings = Field(
        default_factory=SpeculativeSettings, description="Speculative decoding (default: ngram)."
    )
    gateway: StackGatewaySettings = Field(default_factory=StackGatewaySettings)
    autoscaling: AutoscalingPolicy | None = Field(
        None,
        description="Autoscaling policy (inferstack.autoscale): when present, `up` runs the local "
        "autoscaler with it (`replicas` is the start count, clamped to min..max); the same section "
        "renders the HPA for GKE and drives `autoscale simulate`.",
    )
    batch: StackBatchSettings = Field(default_factory=StackBatchSettings)
    auth: AuthSettings | None = Field(None, description="API keys and tenants for the gateway and the batch "
                                      "API (off: no keys, the tenant is x-gateway-inference-fairness-id).")
    lora: LoraSettings = Field(
        default_factory=LoraSettings,
        description="LoRA adapters on every replica (default off): vLLM flags, static adapters, runtime API.",
    )

    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings,
                                           description="A Prometheus beside the stack (default off).")

    @model_validator(mode="after")
    def _monitoring_port_is_its_own(self) -> StackConfig:
        if self.monitoring.enabled and self.gateway.enabled:
            gw = self.gateway
            taken = {gw.port: "gateway.port", gw.admin_port: "gateway.admin_port"}
            for i, (grpc_port, metrics_port) in enumerate(gw.picker_ports()):
                taken |= {grpc_port: f"gateway.epp.grpc_port + {i}" if i else "gateway.epp.grpc_port",
                          metrics_port: f"gateway.epp.metrics_port + {i}" if i else "gateway.epp.metrics_port"}
            if self.monitoring.port in taken:
                raise ValueError(f"monitoring.port {self.monitoring.port} is also {taken[self.monitoring.port]}; "
                                 "give Prometheus a port of its own")
        return self

    @model_validator(mode="after")
    def _keys_beyond_loopback(self) -> StackConfig:
        if self.gateway.enabled:
            check_exposure(self.gateway.listen_host, self.auth is not None, self.gateway.insecure, "auth.file")
        return self

    @model_validator(mode="after")
    def _lora_with_speculation(self) -> StackConfig:
        # vLLM refuses LoRA + speculative decoding unless a batch of max_num_seqs requests, each
        # with k draft tokens, fits in max_num_batched_tokens (vllm/engine/arg_utils.py): say so
        # here, not in a replica's log after it failed to start.
        spec, engine = self.speculative, self.engine
        if self.lora.enabled and spec.enabled and engine.engine == "vllm-cpu":
            seqs = engine.max_num_seqs or _CPU_MAX_SEQS
            if seqs * (spec.num_speculative_tokens + 1) > _CPU_BATCHED_TOKENS:
                raise ValueError(
                    f"LoRA with speculative decoding needs max_num_seqs x (num_speculative_tokens + 1) "
                    f"<= {_CPU_BATCHED_TOKENS} (vLLM's batched-token limit): {seqs} x "
                    f"{spec.num_speculative_tokens + 1} is more; lower engine.max_num_seqs or "
                    "speculative.num_speculative_tokens")
        return self


# vLLM-CPU's defaults for the OpenAI server: --max-num-batched-tokens 2048, --max-num-seqs 128.
_CPU_BATCHED_TOKENS, _CPU_MAX_SEQS = 2048, 128


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> StackConfig:
    """Load the YAML file (if any), deep-merge ``overrides`` (from CLI flags), validate."""
    data = read_yaml_mapping(path, "config file") if path is not None else {}
    if overrides:
        data = _merge(data, overrides)
    return validate(StackConfig, data, str(path) if path is not None else "config")


def merge_config(config: StackConfig, changes: dict[str, Any]) -> StackConfig:
    """``config`` with ``changes`` deep-merged in, validated again (a running stack's reconfigure)."""
    return validate(StackConfig, _merge(config.model_dump(mode="json"), changes), "reconfigure")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
