"""``inferstack recommend`` and ``inferstack render``.

recommend: the sizing arithmetic for a catalog model on an accelerator, ending with the plan
(``tensor-parallel-size: N`` among it); a pair that cannot fit exits non-zero with the arithmetic.

render: the Kubernetes/GKE manifests as a kustomize directory (or one file with --single-file);
``--check`` validates every object offline and fails with object, field and reason. The contract:
``inferstack render ... --bucket B --project P --namespace N [--epp upstream|inferstack]``; a
render without a bucket exits 2 and says what to pass. Autoscaling: ``--autoscale-metric
waiting|running|kv|epp-queue --autoscale-target X [--autoscale-min A --autoscale-max B]
[--autoscaler hpa|keda]`` shape the same ``autoscaling:`` policy the config file holds. LoRA:
``--lora [NAME=SOURCE]`` (repeatable; SOURCE a hub id org/name or gs://BUCKET/adapters/...)
``[--max-loras N] [--max-lora-rank R]`` shape the ``lora:`` section; adapters add to the file's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from inferstack.autoscale.policy import METRICS
from inferstack.errors import ConfigError
from inferstack.kube.render import render, write
from inferstack.kube.settings import GATEWAY_CLASSES, RenderSettings, load_settings
from inferstack.kube.validate import KUBERNETES_VERSION, validate_objects
from inferstack.models.catalog import ACCELERATORS, MODELS, get_accelerator, get_model
from inferstack.models.sizing import recommend

__all__ = ["register"]

_SPECS = ("none", "ngram", "eagle", "eagle3")


def _model_help() -> str:
    return "catalog model: " + ", ".join(m.name for m in MODELS)


def _acc_help() -> str:
    return "accelerator: " + ", ".join(a.short_name for a in ACCELERATORS)


def _cmd_recommend(args: argparse.Namespace) -> int:
    plan = recommend(
        get_model(args.model),
        get_accelerator(args.accelerator),
        gpus=args.gpus,
        nodes=args.nodes,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        spec_method=args.spec,
    )
    print("\n".join(plan.explain()))
    return 0


def spec_from(path: Path) -> dict[str, Any]:
    """Render overrides from the ``speculative:`` section of a stack config (e.g. the
    ``recommended.yaml`` of ``inferstack tune-spec``); --spec and the render config's own keys
    given as flags still win over it."""
    from inferstack.configfile import read_yaml_mapping, validate
    from inferstack.engine.speculative import SpeculativeSettings

    section = read_yaml_mapping(path, "stack config").get("speculative")
    if not isinstance(section, dict):
        raise ConfigError(f"--spec-from '{path}' has no speculative: section (a stack config such as "
                          "tune-spec's recommended.yaml)")
    spec = validate(SpeculativeSettings, section, f"{path}: speculative")
    if spec.method not in _SPECS:
        why = (" (suffix decoding needs arctic-inference, not a vLLM dependency: the vLLM image would "
               "need it added)" if spec.method == "suffix" else "")
        raise ConfigError(f"--spec-from '{path}': method '{spec.method}' cannot be rendered{why}; render "
                          f"supports {', '.join(_SPECS)}")
    out: dict[str, Any] = {"spec": spec.method}
    if spec.num_speculative_tokens_per_batch_size is not None:
        raise ConfigError(f"--spec-from '{path}': render takes off_above_batch, not a full "
                          "num_speculative_tokens_per_batch_size schedule")
    if spec.enabled:
        out["speculative.num_speculative_tokens"] = spec.num_speculative_tokens
        out["speculative.off_above_batch"] = spec.off_above_batch
    if spec.method == "ngram":
        out["speculative.prompt_lookup_min"] = spec.prompt_lookup_min
        out["speculative.prompt_lookup_max"] = spec.prompt_lookup_max
    return out


def _cmd_render(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.spec_from is not None:
        overrides.update(spec_from(args.spec_from))
    for key in ("model", "accelerator", "spec", "nodes", "gpus", "namespace", "project"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    flags = {
        "bucket": "model_bucket",
        "epp": "gateway.epp",
        "epp_image": "images.epp",
        "hf_token_source": "hf_token_source",
        "cold_start": "cold_start.mode",
        "dataset": "bench.dataset",
    }
    for attr, key in flags.items():
        value = getattr(args, attr)
        if value is not None:
            overrides[key] = value
    if args.load_format is not None:
        overrides["cold_start.mode"] = "runai-streamer" if args.load_format == "runai_streamer" else "auto"
    if args.gateway_class is not None:
        overrides["gateway.gateway_class"] = GATEWAY_CLASSES.get(args.gateway_class, args.gateway_class)
    if args.reference_compute_classes:
        overrides["compute_class_names"] = "reference"
    if args.auth_secret is not None:
        overrides["gateway.auth_secret"] = args.auth_secret
    if args.external_without_keys:
        overrides["gateway.external_without_keys"] = True
    if args.no_gateway:
        overrides["gateway.enabled"] = False
    if args.batch:
        overrides["batch.enabled"] = True
    if args.monitoring:
        overrides["monitoring.enabled"] = True
    if args.no_autoscale:
        overrides["autoscaling.enabled"] = False
    if args.lora is not None or args.max_loras is not None or args.max_lora_rank is not None:
        overrides["lora.enabled"] = True
    for attr in ("max_loras", "max_lora_rank"):
        if getattr(args, attr) is not None:
            overrides[f"lora.{attr}"] = getattr(args, attr)
    for attr, key in (("autoscale_min", "min_replicas"), ("autoscale_max", "max_replicas"),
                      ("autoscaler", "autoscaler")):
        if getattr(args, attr) is not None:
            overrides[f"autoscaling.{key}"] = getattr(args, attr)
    cli_adapters = _adapters(args.lora or [])
    settings = load_settings(args.config, overrides)
    if cli_adapters:
        # Added to the file's adapters (a name given in both takes the flag's source).
        overrides["lora.adapters"] = {**settings.lora.adapters, **cli_adapters}
        settings = load_settings(args.config, overrides)
    if args.autoscale_metric is not None or args.autoscale_target is not None:
        overrides["autoscaling.metrics"] = [_one_metric(args, settings)]
        settings = load_settings(args.config, overrides,
                                 remove=("autoscaling.metric", "autoscaling.target", "autoscaling.metrics"))
    rendered = render(settings)
    objects = rendered.objects()
    if args.check:
        issues = validate_objects(objects)
        if issues:
            for issue in issues:
                print(f"invalid: {issue}", file=sys.stderr)
            print(f"render --check: {len(issues)} problem(s) in {len(objects)} objects; nothing written",
                  file=sys.stderr)
            return 1
    files = write(rendered, args.output, single_file=args.single_file)
    stack = rendered.stack
    print(f"rendered {len(objects)} objects for {stack.model.name} on {stack.accelerator.name} "
          f"into {args.output}: {', '.join(str(p.relative_to(args.output)) for p in files)}")
    print(f"tensor-parallel-size: {stack.plan.tensor_parallel_size}")
    print(f"pipeline-parallel-size: {stack.plan.pipeline_parallel_size}")
    print(f"max-model-len: {stack.plan.max_model_len}")
    if args.check:
        print(f"validated {len(objects)} objects offline (Kubernetes {KUBERNETES_VERSION} schemas + "
              f"shipped CRD schemas): OK")
    return 0


def _adapters(values: list[str]) -> dict[str, str]:
    """``--lora NAME=SOURCE`` values (a bare ``--lora`` gives ``""``) -> name -> source."""
    adapters: dict[str, str] = {}
    for value in values:
        if not value:
            continue
        name, sep, source = value.partition("=")
        if not sep or not name or not source:
            raise ConfigError(
                f"--lora has value {value!r}; expected NAME=SOURCE, SOURCE a hub id org/name or "
                f"gs://BUCKET/adapters/<folder> (or --lora alone to enable LoRA without adapters)"
            )
        if name in adapters:
            raise ConfigError(f"--lora names adapter '{name}' twice; give each adapter once")
        adapters[name] = source
    return adapters


def _one_metric(args: argparse.Namespace, settings: RenderSettings) -> dict[str, Any]:
    """--autoscale-metric/--autoscale-target replace the policy's metrics with one; a target alone
    applies to the configured metric (when there is one), a metric alone takes its default target."""
    metric = args.autoscale_metric
    if metric is None:
        current = settings.autoscaling.metrics
        if len(current) != 1:
            raise ConfigError(
                f"--autoscale-target has value {args.autoscale_target:g} but the config lists "
                f"{len(current)} autoscaling metrics: pass --autoscale-metric too"
            )
        metric = current[0].metric
    entry: dict[str, Any] = {"metric": metric}
    if args.autoscale_target is not None:
        entry["target"] = args.autoscale_target
    return entry


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rec = subparsers.add_parser(
        "recommend",
        help="GPUs, tensor-parallel size, context and batch for a model on an accelerator",
        description="Explain the sizing arithmetic for a catalog model on a GKE accelerator.",
    )
    rec.add_argument("--model", required=True, help=_model_help())
    rec.add_argument("--accelerator", required=True, help=_acc_help())
    rec.add_argument("--gpus", type=int, help="accelerators per node (= tensor-parallel size); default: search")
    rec.add_argument("--nodes", type=int, default=1, help="nodes per replica (pipeline stages); default 1")
    rec.add_argument("--gpu-memory-utilization", type=float, help="default: the accelerator's")
    rec.add_argument("--max-model-len", type=int, help="require this context (default: native, <= 128k)")
    rec.add_argument("--spec", choices=_SPECS, default="none", help="speculative method (EAGLE adds a head)")
    rec.set_defaults(func=_cmd_recommend)

    ren = subparsers.add_parser(
        "render",
        help="write Kubernetes/GKE manifests (kustomize directory)",
        description="Render vLLM + gateway + autoscaling + Jobs for GKE as a kustomize directory.",
    )
    ren.add_argument("--model", help=_model_help())
    ren.add_argument("--accelerator", help=_acc_help())
    ren.add_argument("--spec", choices=_SPECS, help="speculative decoding method (default none)")
    ren.add_argument("--no-gateway", action="store_true", help="no InferencePool/EPP/Gateway/HTTPRoute")
    ren.add_argument("--batch", action="store_true", help="add the batch service (OpenAI Files + Batch API): "
                     "Deployment, Service, PVC, HTTPRoute for /v1/files and /v1/batches (needs --epp-image)")
    ren.add_argument("--monitoring", action="store_true", help="add Managed Prometheus Rules (recording rules, "
                     "alerts), a PodMonitoring for the batch service and the Grafana dashboards as a ConfigMap")
    ren.add_argument("--no-autoscale", action="store_true", help="no HorizontalPodAutoscaler (or ScaledObject)")
    ren.add_argument("--autoscale-metric", choices=tuple(METRICS),
                     help="the autoscaling metric: waiting (vllm:num_requests_waiting), running "
                     "(vllm:num_requests_running), kv (vllm:kv_cache_usage_perc), epp-queue (the picker's "
                     "pool-average queue); replaces the config's metrics")
    ren.add_argument("--autoscale-target", type=float,
                     help="target per replica (default: waiting 5, kv 0.8, epp-queue 5; running needs one)")
    ren.add_argument("--autoscale-min", type=int, help="fewest replicas (autoscaling.min_replicas, default 1)")
    ren.add_argument("--autoscale-max", type=int, help="most replicas (autoscaling.max_replicas, default 4)")
    ren.add_argument("--autoscaler", choices=("hpa", "keda"),
                     help="render a HorizontalPodAutoscaler (default) or a KEDA ScaledObject")
    ren.add_argument("--lora", nargs="?", action="append", const="", metavar="NAME=SOURCE",
                     help="serve LoRA adapters: vLLM's LoRA flags, the lora-syncer sidecar and its ConfigMap, "
                     "an InferenceObjective per adapter; repeat NAME=SOURCE per adapter (SOURCE: a hub id "
                     "org/name, copied into the bucket by a Job, or gs://BUCKET/adapters/<folder>); "
                     "--lora alone enables LoRA with no adapter yet")
    ren.add_argument("--max-loras", type=int, help="adapters in one batch (lora.max_loras, default 2; implies --lora)")
    ren.add_argument("--max-lora-rank", type=int, choices=(1, 8, 16, 32, 64, 128, 256, 320, 512),
                     help="largest adapter rank (lora.max_lora_rank, default 16; implies --lora)")
    ren.add_argument("--nodes", type=int, help="nodes per replica; > 1 renders a LeaderWorkerSet")
    ren.add_argument("--gpus", type=int, help="accelerators per node (default: recommended)")
    ren.add_argument("--bucket", help="GCS bucket of the model weights (required here or as model_bucket)")
    ren.add_argument("--project", help="Google Cloud project id (Secret Manager, README IAM commands)")
    ren.add_argument("--namespace", help="namespace of every namespaced object (default inferstack)")
    ren.add_argument("--epp", choices=("upstream", "inferstack"),
                     help="endpoint picker: the upstream GIE EPP image (default) or ours (needs --epp-image)")
    ren.add_argument("--epp-image", help="our EPP image, built from the repository's Dockerfile (--epp inferstack)")
    ren.add_argument("--gateway-class", choices=(*GATEWAY_CLASSES, *GATEWAY_CLASSES.values()),
                     help="regional-internal (gke-l7-rilb, the default: the VPC only), regional-external or "
                     "global-external (internet-facing: with --auth-secret, or --external-without-keys)")
    ren.add_argument("--auth-secret", metavar="SECRET",
                     help="Kubernetes Secret with the API key file as keys.yaml (+ service-key with --batch): "
                     "every request needs a key (needs --epp inferstack); docs/kube.md")
    ren.add_argument("--external-without-keys", action="store_true",
                     help="allow an internet-facing gateway class without keys: IAP or Cloud Armor guards it")
    ren.add_argument("--hf-token-source", choices=("secret", "secret-manager"),
                     help="Hugging Face token from a Kubernetes Secret (default) or Secret Manager")
    ren.add_argument("--cold-start", choices=("auto", "fuse", "prefetch", "runai-streamer"),
                     help="weight loading: auto (prefetch on one node), fuse, prefetch, runai-streamer")
    ren.add_argument("--load-format", choices=("auto", "runai_streamer"),
                     help="vLLM load format; runai_streamer = --cold-start runai-streamer")
    ren.add_argument("--dataset", choices=("auto", "synthetic", "shareGPT", "cnn_dailymail"),
                     help="benchmark prompts (auto: cnn_dailymail for ngram, shareGPT for EAGLE, else synthetic)")
    ren.add_argument("--reference-compute-classes", action="store_true",
                     help="select the reference architecture's ComputeClasses by name and render none")
    ren.add_argument("--output", type=Path, required=True, help="directory to write")
    ren.add_argument("--single-file", action="store_true", help="the stack as one manifests.yaml")
    ren.add_argument("--check", action="store_true", help="validate offline; fail with object, field, reason")
    ren.add_argument("--config", type=Path, help="render settings YAML (see examples/kube/render.yaml)")
    ren.add_argument("--spec-from", type=Path, metavar="STACK_CONFIG",
                     help="take the speculative config (method, k, lookup window) from a stack config, "
                     "e.g. DIR/recommended.yaml of `inferstack tune-spec`")
    ren.set_defaults(func=_cmd_render)
