"""The resolved stack: settings + catalog + sizing plan, and the values every manifest shares.

Invariants: names are DNS-1123 labels of at most 63 characters (checked here, once); every
derived duration is an integer number of seconds with its formula in the field's comment; no
manifest builder re-derives a value that lives here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from inferstack.engine.speculative import SpeculativeSettings
from inferstack.errors import ConfigError
from inferstack.kube.settings import RenderSettings
from inferstack.models.catalog import GIB, Accelerator, DraftHead, ModelSpec, get_accelerator, get_model
from inferstack.models.sizing import Plan, SizingPolicy, recommend

__all__ = ["Stack", "resolve_stack", "VLLM_PORT", "EPP_GRPC_PORT", "EPP_METRICS_PORT"]

VLLM_PORT = 8000
EPP_GRPC_PORT = 9002
EPP_METRICS_PORT = 9090
GCS_ROOT = "/gcs"
DONE_MARKER = ".inferstack-download-complete"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LONGEST_SUFFIX = "-dl-draft"


@dataclass(frozen=True)
class Stack:
    settings: RenderSettings
    model: ModelSpec
    accelerator: Accelerator
    plan: Plan
    name: str
    draft: DraftHead | None
    speculative: SpeculativeSettings
    max_generation_s: int  # max_output_tokens / the sizing policy's decode-speed floor
    prestop_s: int  # endpoint deregistration + max generation: in-flight requests finish here
    grace_s: int  # preStop + 30 s for vLLM to exit after SIGTERM
    request_timeout_s: int  # gateway route / benchmark per-request timeout: generation + 60 s
    startup_budget_s: int  # 600 s + 4 s per GB of weights (GCS FUSE at ~250 MB/s) (+900 s TPU)

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    @property
    def served_name(self) -> str:
        return self.model.name

    @property
    def is_tpu(self) -> bool:
        return self.accelerator.kind == "tpu"

    @property
    def multi_node(self) -> bool:
        return self.plan.nodes > 1

    @property
    def model_dir(self) -> str:
        return f"{GCS_ROOT}/{self.model.gcs_path}"

    @property
    def draft_dir(self) -> str | None:
        return f"{GCS_ROOT}/{self.draft.hf_id.lower()}" if self.draft else None

    @property
    def image(self) -> str:
        return self.settings.images.vllm_tpu if self.is_tpu else self.settings.images.vllm_gpu

    def labels(self, component: str, app: str | None = None, *, shared: bool = False) -> dict[str, str]:
        """Labels; ``shared`` objects (namespace, gateway, ...) may serve several stacks, so they
        carry no app/instance label that another render would overwrite."""
        own = {} if shared else {"app": app or self.name}
        own["app.kubernetes.io/name"] = component
        if not shared:
            own["app.kubernetes.io/instance"] = self.name
        own["app.kubernetes.io/part-of"] = "inferstack"
        own["app.kubernetes.io/managed-by"] = "inferstack"
        return own

    def meta(self, name: str, component: str, *, app: str | None = None, namespaced: bool = True,
             shared: bool = False, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if namespaced:
            meta["namespace"] = self.namespace
        meta["labels"] = self.labels(component, app, shared=shared)
        if annotations:
            meta["annotations"] = annotations
        return meta


def _default_name(model: ModelSpec, acc: Accelerator, spec: str) -> str:
    name = f"vllm-{acc.short_name}-{model.name}".replace(".", "-")
    return f"{name}-{spec}" if spec != "none" else name


def _check_name(name: str, what: str) -> None:
    if not _DNS_LABEL.match(name):
        raise ConfigError(
            f"{what} '{name}' is not a DNS-1123 label (lower-case letters, digits and '-', "
            f"starting with a letter)"
        )
    if len(name) + len(_LONGEST_SUFFIX) > 63:
        raise ConfigError(
            f"{what} '{name}' is {len(name)} characters; with the suffix '{_LONGEST_SUFFIX}' object "
            f"names must stay <= 63, so it must be <= {63 - len(_LONGEST_SUFFIX)}: set 'name' in "
            f"the render config"
        )


def resolve_stack(settings: RenderSettings, policy: SizingPolicy | None = None) -> Stack:
    """Look up the catalog entries, size the deployment and derive the shared values."""
    policy = policy or SizingPolicy()
    model = get_model(settings.model)
    acc = get_accelerator(settings.accelerator)
    if acc.kind == "tpu" and settings.nodes > 1:
        raise ConfigError(
            f"--nodes has value {settings.nodes}; multi-host TPU slices are not rendered here "
            f"(single-host slices up to {acc.max_per_node} chips are): use --nodes 1"
        )
    if settings.autoscale.min_replicas > settings.autoscale.max_replicas:
        raise ConfigError(
            f"autoscale.min_replicas ({settings.autoscale.min_replicas}) cannot exceed "
            f"autoscale.max_replicas ({settings.autoscale.max_replicas})"
        )
    plan = recommend(
        model,
        acc,
        gpus=settings.gpus,
        nodes=settings.nodes,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_model_len=settings.max_model_len,
        spec_method=settings.spec,
        policy=policy,
    )
    name = settings.name or _default_name(model, acc, settings.spec)
    _check_name(name, "name")
    _check_name(settings.namespace, "namespace")
    draft = model.draft_head(settings.spec)
    opts = settings.speculative
    k = opts.num_speculative_tokens or (5 if settings.spec == "ngram" else 3)
    try:
        speculative = SpeculativeSettings(
            method=settings.spec,
            num_speculative_tokens=k,
            prompt_lookup_min=opts.prompt_lookup_min,
            prompt_lookup_max=opts.prompt_lookup_max,
            model=f"{GCS_ROOT}/{draft.hf_id.lower()}" if draft else None,
        )
    except ValueError as exc:
        raise ConfigError(f"speculative settings: {exc}") from exc
    generation = math.ceil(settings.max_output_tokens / policy.min_decode_tokens_per_s)
    prestop = settings.endpoint_deregistration_s + generation
    weights_gb = model.weight_bytes / 1e9
    startup = 600 + math.ceil(4 * weights_gb) + (900 if acc.kind == "tpu" else 0)
    return Stack(
        settings=settings,
        model=model,
        accelerator=acc,
        plan=plan,
        name=name,
        draft=draft,
        speculative=speculative,
        max_generation_s=generation,
        prestop_s=prestop,
        grace_s=prestop + 30,
        request_timeout_s=generation + 60,
        startup_budget_s=startup,
    )


def gib(nbytes: float) -> float:
    return nbytes / GIB
