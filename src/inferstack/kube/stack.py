"""The resolved stack: settings + catalog + sizing plan, and the values every manifest shares.

Invariants: names are DNS-1123 labels of at most 63 characters (checked here, once); the bucket
is the user's (a render without one is refused here, with what to pass); every derived duration is
an integer number of seconds with its formula in the field's comment; cluster-scoped names we own
carry the ``inferstack-`` prefix; no manifest builder re-derives a value that lives here.
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

__all__ = [
    "ADAPTERS_DIR",
    "AUTH_DIR",
    "AUTH_KEYS_FILE",
    "AUTH_SERVICE_KEY_FILE",
    "DONE_MARKER",
    "DOWNLOAD_COMPUTE_CLASS",
    "EPP_GRPC_HEALTH_PORT",
    "EPP_GRPC_PORT",
    "EPP_METRICS_PORT",
    "OWN_PREFIX",
    "REFERENCE_DOWNLOAD_COMPUTE_CLASS",
    "Stack",
    "StackAdapter",
    "VLLM_PORT",
    "resolve_stack",
]

VLLM_PORT = 8000
EPP_GRPC_PORT = 9002
EPP_GRPC_HEALTH_PORT = 9003  # the upstream EPP's grpc.health.v1 port (ours answers on EPP_GRPC_PORT)
EPP_METRICS_PORT = 9090
GCS_ROOT = "/gcs"
# Written last by our download Job. Optional: a folder with config.json and every weight file
# its index names (what the reference's download Job leaves) counts as complete too.
DONE_MARKER = ".inferstack-download-complete"
# ComputeClass names are cluster-wide: ours carry a prefix so they never overwrite the reference
# architecture's classes of the same shape (which have other contents).
OWN_PREFIX = "inferstack-"
DOWNLOAD_COMPUTE_CLASS = f"{OWN_PREFIX}model-download"
REFERENCE_DOWNLOAD_COMPUTE_CLASS = "model-download"

# Where the model bucket's adapters folder (lora.adapters_folder) is mounted in every vLLM pod.
ADAPTERS_DIR = "/adapters"
# Where the picker and the batch service read the auth Secret (gateway.auth_secret): keys.yaml,
# and service-key (the key batch lines are sent with) when the batch service runs.
AUTH_DIR = "/etc/inferstack-auth"
AUTH_KEYS_FILE = f"{AUTH_DIR}/keys.yaml"
AUTH_SERVICE_KEY_FILE = f"{AUTH_DIR}/service-key"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LONGEST_SUFFIX = "-dl-draft"


@dataclass(frozen=True)
class StackAdapter:
    """One LoRA adapter of ``lora.adapters``, resolved against the model bucket."""

    name: str  # served name = the InferenceObjective's name
    source: str  # as configured: a hub id or gs://BUCKET/FOLDER/...
    folder: str  # its folder relative to lora.adapters_folder (inside the mount)
    hub_id: str | None  # set when a download Job copies it from the Hugging Face Hub

    @property
    def pod_path(self) -> str:
        """What the syncer gives vLLM as the adapter's path."""
        return f"{ADAPTERS_DIR}/{self.folder}"


@dataclass(frozen=True)
class Stack:
    settings: RenderSettings
    model: ModelSpec
    accelerator: Accelerator
    plan: Plan
    name: str
    draft: DraftHead | None
    speculative: SpeculativeSettings
    bucket: str  # the user's GCS bucket (required: bucket names are global, no default can work)
    cold_start: str  # fuse | prefetch | runai-streamer ('auto' resolved)
    max_generation_s: int  # max_output_tokens / the sizing policy's decode-speed floor
    prestop_s: int  # endpoint deregistration + max generation: in-flight requests finish here
    grace_s: int  # preStop + 30 s for vLLM to exit after SIGTERM
    request_timeout_s: int  # gateway route / benchmark per-request timeout: generation + 60 s
    startup_budget_s: int  # 600 s + 4 s per GB of weights (GCS FUSE at ~250 MB/s) (+900 s TPU)
    adapters: tuple[StackAdapter, ...] = ()  # lora.adapters, in the config's order

    @property
    def lora(self) -> bool:
        return self.settings.lora.enabled

    def auth_volume(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The auth Secret as (volumes, volume mounts) of a pod that reads keys; none without one."""
        secret = self.settings.gateway.auth_secret
        if not secret:
            return [], []
        return ([{"name": "auth", "secret": {"secretName": secret, "defaultMode": 0o440}}],
                [{"name": "auth", "mountPath": AUTH_DIR, "readOnly": True}])

    @property
    def adapters_configmap(self) -> str:
        """The lora-syncer's ConfigMap (edited to load or unload adapters at runtime)."""
        return f"{self.name}-adapters"

    @property
    def adapter_download_jobs(self) -> list[tuple[str, str]]:
        """(Job name, hub id) per distinct hub id among the adapters."""
        return _adapter_jobs(self.name, self.adapters)

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
    def compute_class_name(self) -> str:
        """The ComputeClass the vLLM pods select: ours (prefixed) or the reference's."""
        ref = self.plan.shape.compute_class
        return ref if self.settings.compute_class_names == "reference" else f"{OWN_PREFIX}{ref}"

    @property
    def download_compute_class(self) -> str:
        """The large-disk ComputeClass the download Jobs select."""
        if self.settings.compute_class_names == "reference":
            return REFERENCE_DOWNLOAD_COMPUTE_CLASS
        return DOWNLOAD_COMPUTE_CLASS

    @property
    def renders_compute_classes(self) -> bool:
        return self.settings.compute_class and self.settings.compute_class_names == "inferstack"

    @property
    def initial_replicas(self) -> int:
        """Replicas the workload is created with: the autoscaling minimum, at least one (an
        autoscaler that may scale to zero still starts from a serving replica)."""
        return max(1, self.settings.autoscaling.min_replicas)

    @property
    def gcs_model_uri(self) -> str:
        return f"gs://{self.bucket}/{self.model.gcs_path}"

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


def _cold_start(settings: RenderSettings, acc: Accelerator, nodes: int) -> str:
    mode = settings.cold_start.mode
    if mode == "auto":
        return "prefetch" if nodes == 1 else "fuse"
    if mode == "prefetch" and nodes > 1:
        raise ConfigError(
            f"cold_start.mode has value 'prefetch' with nodes {nodes}; each node of a pipeline-parallel "
            f"replica loads only its layers, so prefetching every file would fill its file cache with "
            f"weights it never reads: use 'fuse' or 'runai-streamer'"
        )
    if mode == "runai-streamer" and acc.kind == "tpu":
        raise ConfigError(
            f"cold_start.mode has value 'runai-streamer' on {acc.short_name}; it is rendered for the GPU "
            f"image (vllm/vllm-openai bundles runai-model-streamer[gcs]) only: use 'prefetch' or 'fuse'"
        )
    return mode


def _require(settings: RenderSettings) -> str:
    if settings.model_bucket is None:
        raise ConfigError(
            "render needs the GCS bucket that holds (or will hold) the model weights: pass "
            "--bucket NAME (or set 'model_bucket' in the render config); bucket names are global, "
            "so there is no default"
        )
    if settings.hf_token_source == "secret-manager" and settings.project is None:
        raise ConfigError(
            "hf_token_source has value 'secret-manager', which needs the project that holds secret "
            f"'{settings.hf_token_secret_manager_secret}': pass --project PROJECT_ID (or set 'project')"
        )
    if settings.gateway.enabled and settings.gateway.epp == "inferstack" and not settings.images.epp:
        raise ConfigError(
            "gateway.epp has value 'inferstack' but images.epp is not set: build the image from the "
            "repository's Dockerfile, push it and pass --epp-image REGISTRY/PATH:TAG (see docs/kube.md), "
            "or use --epp upstream"
        )
    return settings.model_bucket


def _adapters(settings: RenderSettings, bucket: str, name: str, served_name: str,
              acc: Accelerator) -> tuple[StackAdapter, ...]:
    """lora.adapters against the bucket and the other object names; ConfigError naming the key."""
    lora = settings.lora
    if not lora.enabled:
        return ()
    if acc.kind == "tpu":
        raise ConfigError(
            f"lora.enabled on {acc.short_name}: LoRA is rendered for the GPU image (vllm/vllm-openai) only; "
            f"the pinned vllm-tpu image's LoRA support is not verified here: use a GPU accelerator"
        )
    folder = lora.adapters_folder
    taken = {served_name: "the base model's served name"}
    if settings.batch.enabled:
        taken[f"{name}-batch"] = "the batch service's InferenceObjective"
    out = []
    for adapter, source in lora.adapters.items():
        key = f"lora.adapters.{adapter}"
        if adapter in taken:
            raise ConfigError(f"'{key}': the name '{adapter}' is {taken[adapter]}; rename the adapter")
        if source.startswith("gs://"):
            prefix = f"gs://{bucket}/{folder}/"
            rest = source.rstrip("/")[len(prefix):] if source.startswith(prefix) else ""
            if not rest:
                raise ConfigError(
                    f"'{key}' has value {source!r}; the vLLM pods mount {prefix} (lora.adapters_folder of the "
                    f"model bucket) at {ADAPTERS_DIR} and read adapters from there only: copy it into a "
                    f"folder there (gcloud storage cp --recursive {source.rstrip('/')} {prefix}) and give "
                    f"that URI, or give its hub id"
                )
            out.append(StackAdapter(adapter, source, rest, None))
        else:
            out.append(StackAdapter(adapter, source, source.lower(), source))
    for job, _ in _adapter_jobs(name, out):
        if len(job) > 63:
            raise ConfigError(f"'lora.adapters': download Job '{job}' is longer than 63 characters; set a "
                              f"shorter 'name' in the render config or list fewer hub adapters")
    return tuple(out)


def _adapter_jobs(name: str, adapters: tuple[StackAdapter, ...] | list[StackAdapter]) -> list[tuple[str, str]]:
    hub_ids = list(dict.fromkeys(a.hub_id for a in adapters if a.hub_id))
    return [(f"{name}-dl-lora{i}", hub_id) for i, hub_id in enumerate(hub_ids, 1)]


def resolve_stack(settings: RenderSettings, policy: SizingPolicy | None = None) -> Stack:
    """Look up the catalog entries, size the deployment and derive the shared values."""
    policy = policy or SizingPolicy()
    bucket = _require(settings)
    model = get_model(settings.model)
    acc = get_accelerator(settings.accelerator)
    if acc.kind == "tpu" and settings.nodes > 1:
        raise ConfigError(
            f"--nodes has value {settings.nodes}; multi-host TPU slices are not rendered here "
            f"(single-host slices up to {acc.max_per_node} chips are): use --nodes 1"
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
            off_above_batch=opts.off_above_batch if settings.spec != "none" else None,
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
        bucket=bucket,
        cold_start=_cold_start(settings, acc, plan.nodes),
        max_generation_s=generation,
        prestop_s=prestop,
        grace_s=prestop + 30,
        request_timeout_s=generation + 60,
        startup_budget_s=startup,
        adapters=_adapters(settings, bucket, name, model.name, acc),
    )


def gib(nbytes: float) -> float:
    return nbytes / GIB
