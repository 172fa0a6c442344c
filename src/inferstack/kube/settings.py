"""What ``inferstack render`` renders: one typed settings tree (YAML file and/or CLI flags).

Every field has a default and a description; unknown keys are errors, so a renamed key never
silently vanishes. CLI flags override the file; the file overrides the defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inferstack.autoscale.policy import AutoscalingPolicy
from inferstack.configfile import read_yaml_mapping, validate
from inferstack.errors import ConfigError
from inferstack.gateway.settings import FlowControlSettings
from inferstack.lora.settings import LoraSettings, check_adapter_name

__all__ = [
    "AutoscaleSettings",
    "BatchRenderSettings",
    "BenchSettings",
    "ColdStartSettings",
    "GATEWAY_CLASSES",
    "GatewaySettings",
    "ImageSettings",
    "LoraRenderSettings",
    "MonitoringRenderSettings",
    "RenderSettings",
    "SpeculativeOptions",
    "is_external_class",
    "load_settings",
]

# GKE Gateway classes Inference Gateway works with, by the short names the CLI offers.
GATEWAY_CLASSES: dict[str, str] = {
    "regional-external": "gke-l7-regional-external-managed",
    "regional-internal": "gke-l7-rilb",
    "global-external": "gke-l7-global-external-managed",
}

# GCS bucket names: 3-63 characters of lower-case letters, digits, '-', '_' and '.', starting and
# ending with a letter or digit (dotted names may be longer, but they need domain verification).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
# Google Cloud project ids: 6-30 characters, lower-case letters, digits and '-', starting with a
# letter, not ending with '-'.
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageSettings(_Strict):
    """Container images (pinned; override to use a mirror)."""

    vllm_gpu: str = Field("docker.io/vllm/vllm-openai:v0.11.2", description="vLLM for NVIDIA GPUs.")
    vllm_tpu: str = Field("docker.io/vllm/vllm-tpu:v0.11.1", description="vLLM for Cloud TPU.")
    epp_upstream: str = Field(
        "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0",
        description="Upstream endpoint picker (gateway.epp: upstream): the Gateway API Inference "
        "Extension EPP, the last GIE release that ships it (its successor is llm-d-router).",
    )
    epp: str | None = Field(
        None,
        description="Our endpoint picker image (gateway.epp: inferstack; CLI --epp-image), built from "
        "the repository's Dockerfile; no default, since no public registry hosts it.",
    )
    downloader: str = Field(
        "gcr.io/google.com/cloudsdktool/cloud-sdk:570.0.0-slim",
        description="Model download Job: gcloud + Python (huggingface_hub is pip-installed).",
    )
    inference_perf: str = Field(
        "quay.io/inference-perf/inference-perf:v0.7.0",
        description="Benchmark Job; the rendered config follows the inference-perf 0.7.0 schema.",
    )
    wait: str = Field(
        "docker.io/library/busybox:1.36", description="Init containers that wait for a file or URL."
    )
    lora_syncer: str = Field(
        "registry.k8s.io/gateway-api-inference-extension/lora-syncer:v1.2.1",
        description="The Gateway API Inference Extension's LoRA syncer (tools/dynamic-lora-sidecar), a "
        "native sidecar of each vLLM pod with lora.enabled; v1.2.1 is the tag GIE v1.3.0-v1.4.0 deploy "
        "(the sidecar was removed in GIE v1.5).",
    )


class SpeculativeOptions(_Strict):
    """Speculative decoding knobs (the method itself is ``spec``)."""

    num_speculative_tokens: int | None = Field(
        None, ge=1, le=32, description="Tokens proposed per step; default 5 for ngram, 3 for EAGLE."
    )
    prompt_lookup_min: int = Field(2, ge=1, description="ngram: smallest n-gram matched.")
    prompt_lookup_max: int = Field(4, ge=1, description="ngram: largest n-gram matched.")
    off_above_batch: int | None = Field(
        None, ge=1, description="Speculate only while at most this many requests share a step (vLLM's "
        "num_speculative_tokens_per_batch_size); none: at every batch size.")


# GKE Service Extensions: an ext_proc callout's per-message timeout is 10 ms .. 10 s; a request
# waiting in the picker must be answered within it (with a margin for the answer itself).
GKE_CALLOUT_MAX_S = 9.0


class GatewaySettings(_Strict):
    """GKE Inference Gateway: Gateway + HTTPRoute -> InferencePool -> an endpoint picker."""

    enabled: bool = Field(True, description="Render the gateway pieces (CLI: --no-gateway).")
    epp: Literal["upstream", "inferstack"] = Field(
        "upstream",
        description="Endpoint picker behind the InferencePool: 'upstream' (images.epp_upstream with an "
        "EndpointPickerConfig equivalent to our scheduler) or 'inferstack' (ours, images.epp). CLI: --epp.",
    )
    gateway_name: str = Field("inferstack-gateway", description="Gateway object name.")
    gateway_class: str = Field(
        "gke-l7-rilb",
        description="GatewayClass: gke-l7-rilb (regional internal: reachable from the VPC only, the "
        "default), gke-l7-regional-external-managed or gke-l7-global-external-managed (internet-facing: "
        "they need auth_secret or external_without_keys) (CLI --gateway-class regional-internal|"
        "regional-external|global-external).",
    )
    auth_secret: str | None = Field(
        None,
        description="Kubernetes Secret holding the API key file as 'keys.yaml' (`inferstack keys add --file "
        "keys.yaml`; the file keeps only key hashes) and, with the batch service, the key its lines are "
        "sent with as 'service-key': our picker then answers 401 to a request without a valid "
        "`Authorization: Bearer` key and the batch API keeps each tenant's files private. Needs epp: "
        "inferstack (CLI --auth-secret).",
    )
    external_without_keys: bool = Field(
        False,
        description="Render an internet-facing gateway class without auth_secret: only for a Gateway that "
        "Identity-Aware Proxy or a Cloud Armor policy guards (docs/kube.md) (CLI --external-without-keys).",
    )
    backend_timeout_s: int | None = Field(
        None, ge=1, le=86400,
        description="GCPBackendPolicy timeoutSec of the InferencePool backend; default: the route's "
        "request timeout (longest generation + 60 s). GKE's default of 30 s cuts long generations.",
    )
    listener_port: int = Field(80, ge=1, le=65535, description="HTTP listener port of the Gateway.")
    epp_replicas: int | None = Field(
        None, ge=1, description="Endpoint picker replicas. Default: 2 for ours (epp: inferstack), active-active, so "
        "requests keep being routed while one restarts; 1 for ours with auth_secret (each replica would count a "
        "tenant's quota alone on GKE) and for the upstream picker (more than 1: its leader election, one active).")
    scrape_interval_ms: int = Field(75, ge=10, description="How often the EPP scrapes vLLM /metrics.")
    priority: int = Field(0, description="InferenceObjective priority of this model (< 0 is sheddable).")
    flow_control: FlowControlSettings = Field(
        default_factory=FlowControlSettings,
        description="Fair queuing in the picker (docs/tenants.md): ours takes these settings as they are; the "
        "upstream one gets its flowControl feature gate, max_requests and max_wait_s as its queue bound and "
        "request TTL, and round-robin turns between tenants. max_wait_s at most "
        f"{GKE_CALLOUT_MAX_S:g} s: GKE's load balancer waits that long at most for the picker's answer.")

    @property
    def picker_replicas(self) -> int:
        if self.epp_replicas is not None:
            return self.epp_replicas
        return 2 if self.epp == "inferstack" and not self.auth_secret else 1

    @model_validator(mode="after")
    def _wait_within_the_callout(self) -> GatewaySettings:
        flow = self.flow_control
        if flow.enabled and flow.max_wait_s > GKE_CALLOUT_MAX_S:
            raise ValueError(
                f"gateway.flow_control.max_wait_s has value {flow.max_wait_s:g}; on GKE at most {GKE_CALLOUT_MAX_S:g}: "
                "a request waits in the picker on the load balancer's ext_proc callout, whose per-message timeout "
                "is 10 s at most (GKE Service Extensions); longer waits would be cut")
        return self

    @model_validator(mode="after")
    def _not_open_to_the_internet(self) -> GatewaySettings:
        if self.auth_secret and self.epp == "upstream":
            raise ValueError("auth_secret needs epp: inferstack (--epp inferstack): the upstream picker checks no "
                             "API keys; with it, guard the Gateway with IAP or Cloud Armor instead (docs/kube.md)")
        if (self.enabled and is_external_class(self.gateway_class) and not self.auth_secret
                and not self.external_without_keys):
            raise ValueError(
                f"gateway class {self.gateway_class} is internet-facing, and without API keys anyone who reaches "
                "it could use the accelerators and the batch API: keep the internal class (gke-l7-rilb, the "
                "default), or set auth_secret (--auth-secret, with --epp inferstack), or say "
                "external_without_keys (--external-without-keys) once IAP or Cloud Armor guards it (docs/kube.md)")
        return self


def is_external_class(gateway_class: str) -> bool:
    """GKE's internet-facing Gateway classes (their names say so; gke-l7-gxlb is the classic one)."""
    return "external" in gateway_class or gateway_class == "gke-l7-gxlb"


class AutoscaleSettings(AutoscalingPolicy):
    """The ``autoscaling:`` policy (``inferstack.autoscale``: min/max, metrics, behavior) plus how
    to render it: a HorizontalPodAutoscaler on Google Managed Prometheus metrics, or a KEDA
    ScaledObject. The same section runs locally (``autoscaling:`` in the stack config) and in the
    simulator. The key was ``autoscale:`` before; that name still loads.
    """

    enabled: bool = Field(True, description="Render autoscaling (CLI: --no-autoscale).")
    autoscaler: Literal["hpa", "keda"] = Field(
        "hpa",
        description="'hpa': a HorizontalPodAutoscaler reading metrics through the custom metrics "
        "Stackdriver adapter; 'keda': a KEDA ScaledObject with prometheus triggers (CLI --autoscaler).",
    )
    prometheus_address: str | None = Field(
        None,
        description="KEDA: the Prometheus query API; default Google Managed Prometheus' "
        "https://monitoring.googleapis.com/v1/projects/<project>/location/global/prometheus.",
    )
    keda_authentication: str | None = Field(
        "gmp-workload-identity",
        description="KEDA: the TriggerAuthentication the triggers use (GCP workload identity for Managed "
        "Prometheus, see docs/autoscale.md); null for a Prometheus that needs none.",
    )


class BenchSettings(_Strict):
    """inference-perf Job: a linear sweep of request rates up to the measured saturation.

    The defaults are the reference architecture's load: 7 stages x 30 s, a 250 s saturation probe,
    20 workers x 15 in-flight requests.
    """

    num_stages: int = Field(7, ge=1, description="Load stages of the linear sweep.")
    stage_duration_s: int = Field(30, ge=1, description="Seconds per stage.")
    saturation_requests: int = Field(2000, ge=1, description="Requests of the saturation probe.")
    saturation_timeout_s: float = Field(250, gt=0, description="Time limit of the saturation probe.")
    num_workers: int = Field(20, ge=1, description="Load generator worker processes.")
    worker_max_concurrency: int = Field(15, ge=1, description="In-flight requests per worker.")
    dataset: Literal["auto", "synthetic", "shareGPT", "cnn_dailymail"] = Field(
        "auto",
        description="Prompts: 'auto' = the reference's choice per speculative method (cnn_dailymail "
        "for ngram, shareGPT for EAGLE/EAGLE-3, synthetic without speculation). shareGPT and "
        "cnn_dailymail stream from the Hugging Face Hub unless dataset_path is set.",
    )
    dataset_path: str | None = Field(
        None,
        description="Object path of a JSON dataset file in the model bucket (e.g. "
        "datasets/ShareGPT_V3_unfiltered_cleaned_split.json), read through GCS FUSE instead of the Hub.",
    )
    input_mean_tokens: int = Field(1024, ge=1, description="Synthetic prompt length, mean.")
    output_mean_tokens: int = Field(256, ge=1, description="Synthetic output length, mean.")
    results_bucket: str | None = Field(
        None, description="GCS bucket for the reports; default: the model bucket."
    )
    through_gateway_url: str | None = Field(
        None,
        description="Benchmark this base URL (e.g. http://GATEWAY_IP) instead of the vLLM Service.",
    )


class ColdStartSettings(_Strict):
    """How a vLLM pod gets its weights into GPU memory (GCS FUSE is the source in every mode)."""

    mode: Literal["auto", "fuse", "prefetch", "runai-streamer"] = Field(
        "auto",
        description="'fuse': vLLM reads safetensors through GCS FUSE; 'prefetch': plus a native sidecar "
        "that reads every weight file in parallel so the GCS FUSE file cache is warm (the reference "
        "architecture's approach); 'runai-streamer': vLLM --load-format runai_streamer streams the "
        "weights straight from gs:// (GPU images only); 'auto': prefetch on one node, fuse across nodes.",
    )
    prefetch_parallelism: int = Field(16, ge=1, le=256, description="Files read at once by the prefetch sidecar.")
    streamer_concurrency: int = Field(16, ge=1, le=256, description="Run:ai streamer reader threads.")
    streamer_memory_limit_gib: int = Field(
        8, ge=1, description="Run:ai streamer CPU buffer (added to the pod's memory request)."
    )


class MonitoringRenderSettings(_Strict):
    """Managed Prometheus rules and Grafana dashboards for the stack (CLI: --monitoring)."""

    enabled: bool = Field(False, description="Render the GMP Rules (recording rules, alerts), a PodMonitoring "
                          "for the batch service and the dashboards ConfigMap (CLI: --monitoring).")


class BatchRenderSettings(_Strict):
    """The batch service (OpenAI Files + Batch API) next to the stack (CLI: --batch)."""

    enabled: bool = Field(False, description="Render the batch service: Deployment, Service, PVC, "
                          "HTTPRoute for /v1/files and /v1/batches, InferenceObjective (CLI: --batch).")
    image: str | None = Field(None, description="Image with the inferstack package (default: images.epp, "
                              "the same image serves the EPP and the batch service).")
    storage_gib: int = Field(10, ge=1, description="Size of the PersistentVolumeClaim holding the SQLite "
                             "database and the input/output files.")
    storage_class: str | None = Field(None, description="StorageClass of that claim (default: the "
                                      "cluster's default, standard-rwo on GKE).")
    gateway_url: str | None = Field(None, description="Where the service sends lines (default: the "
                                    "Gateway's address, read from its status at start).")
    priority: int = Field(-1, lt=0, description="Priority of the batch InferenceObjective (< 0: shed first).")
    max_concurrency: int = Field(16, ge=1, description="Most lines in flight (adaptive below it).")
    max_file_gib: float = Field(0.1, gt=0, description="Largest upload accepted.")


# Adapter names in a cluster also name an InferenceObjective: a DNS-1123 subdomain.
_OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_GCS_URI = re.compile(r"^gs://([^/]+)/(.+)$")
# A folder of the bucket: '/'-separated segments of letters, digits, '.', '_' and '-'.
_OBJECT_FOLDER = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def _gcs_folder_problem(path: str) -> str | None:
    """Why ``path`` (an object folder inside a bucket) is unusable, or None."""
    if not _OBJECT_FOLDER.match(path.strip("/")) or any(p in (".", "..") for p in path.split("/")):
        return "a folder path of letters, digits, '.', '_', '-' and '/' (no '.' or '..' segments)"
    return None


def check_adapter_source(name: str, source: str) -> str:
    """``source`` if a vLLM pod can get the adapter from it (a hub id ``org/name``, copied into the
    bucket by a download Job, or ``gs://BUCKET/FOLDER/...``); ValueError naming the adapter."""
    if _HUB_ID.match(source):
        return source
    uri = _GCS_URI.match(source)
    if uri:
        bucket, path = uri.groups()
        if not _BUCKET.match(bucket):
            raise ValueError(f"adapter '{name}' has source {source!r}: '{bucket}' is not a GCS bucket name")
        problem = _gcs_folder_problem(path)
        if problem:
            raise ValueError(f"adapter '{name}' has source {source!r}: after gs://{bucket}/ comes {problem}")
        return source
    if source.startswith(("/", "./", "../", "~")) or "://" not in source:
        why = "a local folder cannot be read by pods in the cluster"
    else:
        why = "vLLM cannot load that scheme in the cluster"
    raise ValueError(
        f"adapter '{name}' has source {source!r}: {why}; use a hub id org/name (a download Job copies it "
        f"into the bucket) or gs://BUCKET/adapters/<folder> (copy it there first: gcloud storage cp "
        f"--recursive DIR gs://BUCKET/adapters/)"
    )


class LoraRenderSettings(LoraSettings):
    """LoRA adapters on every vLLM pod (CLI: --lora [NAME=SOURCE], --max-loras, --max-lora-rank).

    The vLLM knobs and their rules are the stack config's ``lora:`` section
    (``inferstack.lora.LoraSettings``); in a cluster the adapters are not ``--lora-modules`` but the
    lora-syncer's ConfigMap (edit it to load or unload adapters at runtime), their folders live in
    the model bucket under ``adapters_folder`` (mounted read-only at /adapters), and each adapter
    gets an InferenceObjective.
    """

    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Adapters every pod holds, name -> source: a hub id org/name (a download Job copies "
        "it to gs://BUCKET/<adapters_folder>/<org>/<name>) or gs://BUCKET/<adapters_folder>/<path> already "
        "in the model bucket. The name is what clients send as 'model' and names the adapter's "
        "InferenceObjective, so it is lower-case (a DNS-1123 subdomain).",
    )
    adapters_folder: str = Field(
        "adapters",
        description="Folder of the model bucket mounted read-only at /adapters in every vLLM pod: adapters "
        "copied there later can be loaded by editing the syncer's ConfigMap, without a restart.",
    )
    priority: int | None = Field(
        None, description="InferenceObjective priority of each adapter; default: gateway.priority."
    )

    @field_validator("adapters")
    @classmethod
    def _check_adapters(cls, adapters: dict[str, str]) -> dict[str, str]:
        for name, source in adapters.items():
            check_adapter_name(name)
            if not _OBJECT_NAME.match(name):
                raise ValueError(
                    f"adapter name {name!r} cannot name its InferenceObjective: use lower-case letters, "
                    f"digits, '-' and '.', starting and ending with a letter or digit"
                )
            check_adapter_source(name, source)
        return adapters

    @field_validator("adapters_folder")
    @classmethod
    def _check_folder(cls, folder: str) -> str:
        problem = _gcs_folder_problem(folder)
        if problem:
            raise ValueError(f"must be {problem}")
        return folder.strip("/")

    def engine_settings(self) -> LoraSettings:
        """The vLLM knobs alone (no static adapters: the syncer loads those at runtime)."""
        return LoraSettings(enabled=self.enabled, max_loras=self.max_loras, max_lora_rank=self.max_lora_rank,
                            max_cpu_loras=self.max_cpu_loras)


class RenderSettings(_Strict):
    """Everything one ``inferstack render`` needs; the model and accelerator come from the catalog."""

    model: str = Field(description="Catalog model (served name, hub id or alias).")
    accelerator: str = Field(description="Catalog accelerator (h100, nvidia-h100-80gb, v6e, ...).")
    spec: Literal["none", "ngram", "eagle", "eagle3"] = Field("none", description="Speculative method.")
    speculative: SpeculativeOptions = Field(default_factory=SpeculativeOptions)
    nodes: int = Field(1, ge=1, description="Nodes per replica; > 1 renders a LeaderWorkerSet (TP x PP).")
    gpus: int | None = Field(None, ge=1, description="Accelerators per node; default: recommended.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Default: the accelerator's catalog default."
    )
    max_model_len: int | None = Field(None, ge=1, description="Default: the recommended one.")
    name: str | None = Field(
        None, description="Base object name; default vllm-<accelerator>-<model>[-<spec>]."
    )
    namespace: str = Field("inferstack", description="Namespace of every namespaced object (CLI --namespace).")
    create_namespace: bool = Field(True, description="Render the Namespace object.")
    project: str | None = Field(
        None,
        description="Google Cloud project id (CLI --project): names the Secret Manager secret and goes "
        "into the README's IAM commands.",
    )
    compute_class: bool = Field(
        True,
        description="Select nodes with custom ComputeClasses (else select by the accelerator node labels).",
    )
    compute_class_names: Literal["inferstack", "reference"] = Field(
        "inferstack",
        description="'inferstack': render our own ComputeClasses, named inferstack-<shape> and "
        "inferstack-model-download; 'reference': select the reference architecture's classes by their "
        "names (gpu-h100-80gb-high-x4, model-download, ...) and render none, so a cluster set up by the "
        "reference keeps its own (CLI --reference-compute-classes).",
    )
    model_bucket: str | None = Field(
        None,
        description="GCS bucket holding model weights, read through GCS FUSE (CLI --bucket); required.",
    )
    service_account: str = Field(
        "inferstack",
        description="Kubernetes ServiceAccount of vLLM and the Jobs; grant it bucket access with "
        "Workload Identity Federation (and monitoring.viewer for the benchmark).",
    )
    hf_token_source: Literal["secret", "secret-manager"] = Field(
        "secret",
        description="Where the download Jobs read the Hugging Face token: a Kubernetes Secret "
        "(hf_token_secret, key 'token') or Secret Manager through a SecretProviderClass (the "
        "reference's way; needs the Secret Manager add-on and 'project').",
    )
    hf_token_secret: str = Field(
        "hf-token",
        description="Kubernetes Secret (key 'token') with a Hugging Face token; with Secret Manager, "
        "the name of the SecretProviderClass.",
    )
    hf_token_secret_manager_secret: str = Field(
        "hf-token", description="Secret Manager secret holding the token (hf_token_source: secret-manager)."
    )
    max_output_tokens: int = Field(
        4096, ge=1, description="Longest generation we wait for when draining a pod."
    )
    endpoint_deregistration_s: int = Field(
        15, ge=0, description="Time for routers to stop sending to a terminating pod."
    )
    cold_start: ColdStartSettings = Field(default_factory=ColdStartSettings)
    images: ImageSettings = Field(default_factory=ImageSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    autoscaling: AutoscaleSettings = Field(
        default_factory=AutoscaleSettings,
        description="Autoscaling policy and how to render it (old key: 'autoscale').",
    )
    bench: BenchSettings = Field(default_factory=BenchSettings)
    batch: BatchRenderSettings = Field(default_factory=BatchRenderSettings)
    lora: LoraRenderSettings = Field(default_factory=LoraRenderSettings)
    monitoring: MonitoringRenderSettings = Field(default_factory=MonitoringRenderSettings)

    @model_validator(mode="before")
    @classmethod
    def _old_autoscale_key(cls, data: Any) -> Any:
        return rename_autoscale_key(data)

    @field_validator("model_bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET.match(value):
            raise ValueError(
                "is not a GCS bucket name: 3-63 lower-case letters, digits, '-', '_' or '.', starting "
                "and ending with a letter or digit (give the name, not gs://NAME)"
            )
        return value

    @field_validator("project")
    @classmethod
    def _project_id(cls, value: str | None) -> str | None:
        if value is not None and not _PROJECT.match(value):
            raise ValueError(
                "is not a Google Cloud project id: 6-30 lower-case letters, digits or '-', starting "
                "with a letter"
            )
        return value


def rename_autoscale_key(data: Any) -> Any:
    """The render config's old key ``autoscale:`` is ``autoscaling:`` now; both at once is an error."""
    if isinstance(data, dict) and "autoscale" in data:
        if "autoscaling" in data:
            raise ConfigError("render config has both 'autoscale' (the old name) and 'autoscaling': keep "
                              "'autoscaling'")
        data = {("autoscaling" if k == "autoscale" else k): v for k, v in data.items()}
    return data


def load_settings(path: Path | None, overrides: dict[str, object],
                  remove: tuple[str, ...] = ()) -> RenderSettings:
    """Settings from a YAML file (optional) with CLI overrides applied on top.

    ``overrides`` uses dotted keys for nested fields (``gateway.enabled``); ``remove`` lists dotted
    keys of the file that the overrides replace as a whole (``autoscaling.metrics`` replaces the
    shorthand ``autoscaling.metric``/``target`` too).
    """
    data: dict[str, object] = read_yaml_mapping(path, "render config") if path is not None else {}
    data = rename_autoscale_key(data)
    for dotted in remove:
        *parents, leaf = dotted.split(".")
        section: object = data
        for key in parents:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict):
            section.pop(leaf, None)
    for dotted, value in overrides.items():
        node: dict[str, object] = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"render config key '{key}' must be a mapping")
            node = child
        node[leaf] = value
    return validate(RenderSettings, data, f"render settings '{path}'" if path else "render settings")
