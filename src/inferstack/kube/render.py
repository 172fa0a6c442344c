"""Render the stack into a kustomize directory (or one file), deterministically.

Layout of the output directory::

    kustomization.yaml    the stack: kubectl apply -k DIR
    namespace.yaml        Namespace                                  (create_namespace)
    compute-class.yaml    our ComputeClasses (cluster-scoped): the accelerator shape and the
                          large-disk download nodes        (compute_class, our own class names)
    model-download.yaml   [SecretProviderClass] + Job(s): model [+ draft head] [+ hub LoRA
                          adapters] HF -> GCS
    serving.yaml          ServiceAccount, [lora-syncer ConfigMap], Deployment | LeaderWorkerSet,
                          Service, PodMonitoring
    autoscaling.yaml      HorizontalPodAutoscaler, or a KEDA ScaledObject (autoscaling.enabled,
                          autoscaling.autoscaler)
    gateway.yaml          InferencePool, InferenceObjective (+ one per LoRA adapter),
                          HealthCheckPolicy, GCPBackendPolicy,
                          EPP (SA, Role, RoleBinding, ConfigMap, Deployment, Service,
                          PodMonitoring), Gateway, HTTPRoute         (gateway)
    batch.yaml            batch service: InferenceObjective, SA/Role/RoleBinding, ConfigMap, PVC,
                          Deployment, Service, HTTPRoute /v1/files + /v1/batches  (batch, --batch)
    monitoring.yaml       [PodMonitoring for the batch service], GMP Rules (recording rules, alerts),
                          ConfigMap of Grafana dashboards          (monitoring, --monitoring)
    benchmark/            kustomization.yaml + benchmark.yaml: inference-perf ConfigMap + Job
    README.md             the sizing arithmetic and the order to apply things in

With ``single_file`` the stack is one ``manifests.yaml`` (same objects, same order) next to the
same ``kustomization.yaml`` and ``benchmark/``. Rendering the same settings twice gives
byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inferstack.errors import ConfigError
from inferstack.kube import autoscaling, batch, gateway, jobs, lora, monitoring, serving
from inferstack.kube.settings import RenderSettings
from inferstack.kube.stack import Stack, resolve_stack

__all__ = ["Rendered", "dump_documents", "render", "write"]


@dataclass
class Rendered:
    """The rendered stack: file name -> objects, in apply order."""

    stack: Stack
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    benchmark: list[dict[str, Any]] = field(default_factory=list)

    def objects(self) -> list[dict[str, Any]]:
        """Every object: the stack, then the benchmark."""
        return [obj for objs in self.files.values() for obj in objs] + list(self.benchmark)


_STACK_FILES = (
    "namespace.yaml", "compute-class.yaml", "model-download.yaml", "serving.yaml", "autoscaling.yaml",
    "gateway.yaml", "batch.yaml", "monitoring.yaml",
)


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings (scripts, embedded configs); keys in insertion order."""

    def ignore_aliases(self, data: Any) -> bool:  # never emit &anchors for shared dicts
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dump_documents(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                         explicit_start=True, width=100)


def render(settings: RenderSettings) -> Rendered:
    stack = resolve_stack(settings)
    out = Rendered(stack=stack)
    if settings.create_namespace:
        out.files["namespace.yaml"] = [serving.namespace(stack)]
    if stack.renders_compute_classes:
        out.files["compute-class.yaml"] = [serving.compute_class(stack), serving.download_compute_class(stack)]
    downloads = jobs.download_jobs(stack)
    if settings.hf_token_source == "secret-manager":
        downloads.insert(0, jobs.secret_provider_class(stack))
    downloads += lora.adapter_download_jobs(stack)
    out.files["model-download.yaml"] = downloads
    replicas_monitoring = serving.pod_monitoring(stack, stack.name, stack.name)
    if stack.lora:  # the syncer's lora_syncer_adapter_status gauge
        replicas_monitoring["spec"]["endpoints"].append({"port": "syncer-metrics", "path": "/metrics",
                                                         "interval": "15s"})
    out.files["serving.yaml"] = [
        serving.service_account(stack),
        *([lora.syncer_configmap(stack)] if stack.lora else []),
        serving.vllm_workload(stack),
        serving.vllm_service(stack),
        replicas_monitoring,
    ]
    if settings.autoscaling.enabled:
        out.files["autoscaling.yaml"] = autoscaling.autoscaling_objects(stack)
    if settings.gateway.enabled:
        out.files["gateway.yaml"] = gateway.gateway_objects(stack)
    if settings.batch.enabled:
        out.files["batch.yaml"] = batch.batch_objects(stack)
    if settings.monitoring.enabled:
        out.files["monitoring.yaml"] = monitoring.monitoring_objects(stack)
    out.benchmark = jobs.benchmark_objects(stack)
    return out


def _kustomization(resources: list[str]) -> str:
    doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _readme(rendered: Rendered, single_file: bool) -> str:
    stack = rendered.stack
    plan = stack.plan
    names = ", ".join(f"`{n}`" for n in (["manifests.yaml"] if single_file else list(rendered.files)))
    explain = "\n".join(plan.explain())
    gw = stack.settings.gateway
    settings = stack.settings
    ksa = f"{settings.namespace}/{settings.service_account}"
    project = settings.project or "PROJECT_ID"
    principal = (f"principal://iam.googleapis.com/projects/$(gcloud projects describe {project} "
                 f"--format='value(projectNumber)')/locations/global/workloadIdentityPools/"
                 f"{project}.svc.id.goog/subject/ns/{settings.namespace}/sa/{settings.service_account}")
    if settings.hf_token_source == "secret-manager":
        token = (f"2. The Hugging Face token: Secret Manager secret `{settings.hf_token_secret_manager_secret}`"
                 f" in project `{project}`, read through the SecretProviderClass `{settings.hf_token_secret}`"
                 " (GKE Secret Manager add-on); grant `roles/secretmanager.secretAccessor` on it to"
                 f" `{principal}`"
                 f"{' (required: the model is gated)' if stack.model.gated else ' (unused: the model is public)'}.")
    else:
        token = (f"2. The Hugging Face token: `kubectl -n {stack.namespace} create secret generic"
                 f" {settings.hf_token_secret} --from-file=token=PATH_TO_TOKEN`"
                 f"{' (required: the model is gated)' if stack.model.gated else ' (optional: the model is public)'}.")
    dataset = jobs.dataset_for(stack)
    hub = dataset != "synthetic" and settings.bench.dataset_path is None
    from_hub = ", streamed from the Hugging Face Hub: the pod needs egress" if hub else ""
    lines = [
        f"# {stack.name}",
        "",
        f"{stack.model.name} on {stack.accelerator.description}, rendered by `inferstack render`.",
        "",
        "## Apply",
        "",
        "1. Once per cluster: GKE with the GCS FUSE CSI driver, Workload Identity Federation, Managed"
        " Prometheus, the Gateway API and the Inference Extension CRDs"
        f"{', LeaderWorkerSet' if stack.multi_node else ''}. Once per bucket: `{ksa}` reads and writes"
        f" `gs://{stack.bucket}`: `gcloud storage buckets add-iam-policy-binding gs://{stack.bucket}"
        f" --member={principal} --role=roles/storage.objectUser`.",
        token,
        f"3. `kubectl apply -k .` ({names}). The download Job fills the bucket (it exits at once when"
        " the folder is complete already, e.g. filled by the reference architecture's Job); the vLLM"
        " pods wait until the folder is complete, then load the weights"
        f" ({_COLD_START[stack.cold_start]}).",
        "4. Benchmark when ready: `kubectl apply -k benchmark` (it waits for /health itself;"
        f" dataset `{dataset}`{from_hub}).",
        "",
        "## Derived values",
        "",
        f"- max generation time: {settings.max_output_tokens} tokens at"
        f" >= {plan.policy.min_decode_tokens_per_s:g} tok/s = {stack.max_generation_s} s",
        f"- preStop sleep: {settings.endpoint_deregistration_s} s deregistration +"
        f" {stack.max_generation_s} s generation = {stack.prestop_s} s;"
        f" terminationGracePeriodSeconds {stack.grace_s}",
        f"- startup probe budget: {stack.startup_budget_s} s; route request timeout:"
        f" {stack.request_timeout_s} s",
    ]
    if settings.compute_class:
        owner = "" if stack.renders_compute_classes else ", the reference architecture's, not rendered here"
        lines.append(f"- compute classes: `{stack.compute_class_name}` (vLLM), `{stack.download_compute_class}`"
                     f" (downloads){owner}")
    auto = settings.autoscaling
    if auto.enabled and auto.autoscaler == "keda":
        auth = (f"; the triggers authenticate with the TriggerAuthentication `{auto.keda_authentication}`"
                " (GCP workload identity, see inferstack's docs/autoscale.md)" if auto.keda_authentication else "")
        lines.append(f"- autoscaling: a KEDA ScaledObject (install KEDA first){auth}")
    if gw.enabled:
        epp = settings.images.epp_upstream if gw.epp == "upstream" else settings.images.epp
        lines.append(f"- Gateway `{gw.gateway_name}` (class `{gw.gateway_class}`) -> InferencePool"
                     f" `{stack.name}` -> endpoint picker `{stack.name}-epp` ({gw.epp}: `{epp}`)")
        if gw.auth_secret:
            extra = " and `service-key` (the key batch lines are sent with)" if settings.batch.enabled else ""
            lines.append(f"- API keys: create the Secret `{gw.auth_secret}` first, holding `keys.yaml` (`inferstack "
                         f"keys add --file keys.yaml`){extra}: `kubectl -n {settings.namespace} create secret generic "
                         f"{gw.auth_secret} --from-file=keys.yaml` (docs/tenants.md)")
        elif gw.external_without_keys:
            lines.append("- no API keys on an internet-facing Gateway: attach Identity-Aware Proxy or a Cloud Armor "
                         "policy before sending traffic (docs/kube.md)")
    if stack.lora:
        lines.append(_lora_line(stack))
    lines += ["", "## Sizing", "", "```", explain, "```", ""]
    return "\n".join(lines)


def _lora_line(stack: Stack) -> str:
    lora = stack.settings.lora
    names = ", ".join(f"`{a.name}`" for a in stack.adapters) or "none yet"
    hub = ("; hub adapters are copied there by the `-dl-lora` Jobs" if stack.adapter_download_jobs else "")
    objectives = "; each adapter has an InferenceObjective" if stack.settings.gateway.enabled else ""
    cpu = f" --max-cpu-loras {lora.max_cpu_loras}" if lora.max_cpu_loras is not None else ""
    return (f"- LoRA: `--max-loras {lora.max_loras} --max-lora-rank {lora.max_lora_rank}{cpu}`; adapters ({names})"
            f" are folders under `gs://{stack.bucket}/{lora.adapters_folder}/` (mounted read-only at"
            f" `/adapters`){hub}; the `lora-syncer` sidecar keeps each pod at the ConfigMap"
            f" `{stack.adapters_configmap}`: `kubectl -n {stack.namespace} edit configmap"
            f" {stack.adapters_configmap}` loads or unloads adapters without a restart{objectives}")


_COLD_START = {
    "fuse": "through GCS FUSE",
    "prefetch": "through GCS FUSE; a sidecar reads every weight file in parallel to warm the file cache",
    "runai-streamer": "streamed from gs:// by vLLM's Run:ai model streamer",
}


def write(rendered: Rendered, output: Path, *, single_file: bool = False) -> list[Path]:
    """Write the directory; returns the files written. Refuses to write into a non-directory."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output '{output}' exists and is not a directory")
    (output / "benchmark").mkdir(parents=True, exist_ok=True)
    written: dict[Path, str] = {}
    if single_file:
        written[output / "manifests.yaml"] = dump_documents(
            [obj for objs in rendered.files.values() for obj in objs]
        )
        resources = ["manifests.yaml"]
    else:
        for name, objs in rendered.files.items():
            written[output / name] = dump_documents(objs)
        resources = list(rendered.files)
    written[output / "kustomization.yaml"] = _kustomization(resources)
    written[output / "benchmark" / "benchmark.yaml"] = dump_documents(rendered.benchmark)
    written[output / "benchmark" / "kustomization.yaml"] = _kustomization(["benchmark.yaml"])
    written[output / "README.md"] = _readme(rendered, single_file)
    # A previous render into the same directory may have written files this one does not
    # (multi-file -> single-file, --no-gateway, ...); stale ones would mislead a reader.
    for name in _STACK_FILES + ("manifests.yaml",):
        stale = output / name
        if stale not in written and stale.is_file():
            stale.unlink()
    for path, text in written.items():
        path.write_text(text)
    return sorted(written)
