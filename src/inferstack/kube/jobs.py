"""The Jobs: model (and draft head) download Hugging Face -> GCS, and the inference-perf benchmark.

Invariants: the Hugging Face token comes from a Secret mounted as a file (HF_TOKEN_PATH), never
an argument or an env literal; a download is idempotent (it skips when the completion marker is
already in the bucket) and writes the marker last, so vLLM pods that wait for it see a complete
folder; the benchmark waits for the server's /health before it starts its sweep.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from inferstack.kube.serving import CONTAINER_SECURITY, POD_SECURITY, gcs_volume
from inferstack.kube.stack import DONE_MARKER, VLLM_PORT, Stack

__all__ = ["benchmark_objects", "download_jobs", "inference_perf_config"]

_TOKEN_DIR = "/var/run/secrets/huggingface.co"

_DOWNLOAD_SCRIPT = """\
set -o errexit -o nounset -o pipefail
if gcloud storage ls "gs://${BUCKET}/${TARGET}/%(marker)s" >/dev/null 2>&1; then
  echo "gs://${BUCKET}/${TARGET} is complete already; nothing to do"
  exit 0
fi
pip3 install --quiet --no-cache-dir --break-system-packages --root-user-action=ignore \\
  'huggingface_hub>=0.34,<2'
echo "downloading ${REPO_ID}"
hf download "${REPO_ID}" --repo-type model --local-dir /local/model --max-workers 8
rm -rf /local/model/.cache
echo "uploading to gs://${BUCKET}/${TARGET}/"
gcloud storage cp --recursive /local/model/* "gs://${BUCKET}/${TARGET}/"
date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ | gcloud storage cp - "gs://${BUCKET}/${TARGET}/%(marker)s"
echo "done"
"""


def _download_job(stack: Stack, name: str, repo_id: str, target: str, size_bytes: float,
                  gated: bool) -> dict[str, Any]:
    scratch_gi = max(10, math.ceil(size_bytes * 1.1 / 2**30) + 5)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": stack.meta(name, "model-download", app=name),
        "spec": {
            "backoffLimit": 3,
            "template": {
                "metadata": {"labels": stack.labels("model-download", app=name)},
                "spec": {
                    "serviceAccountName": stack.settings.service_account,
                    "automountServiceAccountToken": False,
                    "restartPolicy": "Never",
                    "securityContext": POD_SECURITY,
                    "containers": [{
                        "name": "download",
                        "image": stack.settings.images.downloader,
                        "command": ["/bin/bash", "-c", _DOWNLOAD_SCRIPT % {"marker": DONE_MARKER}],
                        "env": [
                            {"name": "REPO_ID", "value": repo_id},
                            {"name": "BUCKET", "value": stack.settings.model_bucket},
                            {"name": "TARGET", "value": target},
                            {"name": "HF_TOKEN_PATH", "value": f"{_TOKEN_DIR}/token"},
                            {"name": "HF_HOME", "value": "/local/hf-home"},
                        ],
                        "resources": {
                            "requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": f"{scratch_gi}Gi"},
                            "limits": {"memory": "8Gi", "ephemeral-storage": f"{scratch_gi}Gi"},
                        },
                        "volumeMounts": [
                            {"name": "local", "mountPath": "/local"},
                            {"name": "hf-token", "mountPath": _TOKEN_DIR, "readOnly": True},
                        ],
                        "securityContext": CONTAINER_SECURITY,
                    }],
                    "volumes": [
                        {"name": "local", "emptyDir": {"sizeLimit": f"{scratch_gi}Gi"}},
                        {
                            "name": "hf-token",
                            "secret": {
                                "secretName": stack.settings.hf_token_secret,
                                "items": [{"key": "token", "path": "token"}],
                                # Public repositories download without a token.
                                "optional": not gated,
                            },
                        },
                    ],
                },
            },
        },
    }


def download_jobs(stack: Stack) -> list[dict[str, Any]]:
    jobs = [
        _download_job(stack, f"{stack.name}-dl-model", stack.model.hf_id, stack.model.gcs_path,
                      stack.model.weight_bytes, stack.model.gated)
    ]
    if stack.draft:
        draft_bytes = stack.plan.chosen.draft * stack.plan.tensor_parallel_size
        jobs.append(
            _download_job(stack, f"{stack.name}-dl-draft", stack.draft.hf_id, stack.draft.hf_id.lower(),
                          draft_bytes, gated=False)
        )
    return jobs


def _base_url(stack: Stack) -> str:
    url = stack.settings.bench.through_gateway_url
    return url or f"http://{stack.name}.{stack.namespace}.svc.cluster.local:{VLLM_PORT}"


def inference_perf_config(stack: Stack) -> dict[str, Any]:
    """inference-perf (0.7.0 schema): synthetic prompts, linear sweep up to saturation."""
    bench = stack.settings.bench
    mml = stack.plan.max_model_len
    in_max = max(16, min(4 * bench.input_mean_tokens, mml // 2))
    out_max = max(16, min(4 * bench.output_mean_tokens, mml // 4))
    in_mean = min(bench.input_mean_tokens, in_max)
    out_mean = min(bench.output_mean_tokens, out_max)
    bucket = bench.results_bucket or stack.settings.model_bucket
    return {
        "api": {"type": "completion", "streaming": True},
        "data": {
            "type": "synthetic",
            "input_distribution": {"min": min(16, in_mean), "max": in_max, "mean": in_mean,
                                   "std_dev": max(1, in_mean // 2)},
            "output_distribution": {"min": min(16, out_mean), "max": out_max, "mean": out_mean,
                                    "std_dev": max(1, out_mean // 2)},
        },
        "load": {
            "type": "constant",
            "interval": 1.0,
            "sweep": {
                "type": "linear",
                "num_requests": bench.saturation_requests,
                "timeout": bench.saturation_timeout_s,
                "num_stages": bench.num_stages,
                "stage_duration": bench.stage_duration_s,
                "saturation_percentile": 95,
            },
            "num_workers": bench.num_workers,
            "worker_max_concurrency": bench.worker_max_concurrency,
            "request_timeout": float(stack.request_timeout_s),
        },
        "metrics": {
            "type": "prometheus",
            "prometheus": {"google_managed": True, "scrape_interval": 15,
                           "filters": [f'namespace="{stack.namespace}"']},
        },
        "report": {
            "request_lifecycle": {"summary": True, "per_stage": True, "per_request": False},
            "prometheus": {"summary": True, "per_stage": True},
        },
        "storage": {
            "local_storage": {"path": "/reports/{timestamp}"},
            "google_cloud_storage": {"bucket_name": bucket, "path": f"inference-perf/{stack.name}/{{timestamp}}"},
        },
        "server": {"type": "vllm", "model_name": stack.served_name, "base_url": _base_url(stack),
                   "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": stack.model_dir},
    }


def benchmark_objects(stack: Stack) -> list[dict[str, Any]]:
    name = f"{stack.name}-bench"
    config = yaml.safe_dump(inference_perf_config(stack), sort_keys=False)
    health = f"{_base_url(stack).rstrip('/')}/health"
    wait = (
        f"until wget -q -O /dev/null {health}; do echo 'waiting for {health}'; sleep 10; done"
    )
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": stack.meta(name, "benchmark", app=name),
            "data": {"config.yaml": config},
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": stack.meta(name, "benchmark", app=name),
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {
                        "labels": stack.labels("benchmark", app=name),
                        "annotations": {"gke-gcsfuse/volumes": "true"},
                    },
                    "spec": {
                        "serviceAccountName": stack.settings.service_account,
                        "automountServiceAccountToken": False,
                        "restartPolicy": "Never",
                        "securityContext": POD_SECURITY,
                        "initContainers": [{
                            "name": "wait-for-server",
                            "image": stack.settings.images.wait,
                            "command": ["/bin/sh", "-c", wait],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                          "limits": {"memory": "32Mi"}},
                            "securityContext": CONTAINER_SECURITY,
                        }],
                        "containers": [{
                            "name": "inference-perf",
                            "image": stack.settings.images.inference_perf,
                            "command": ["inference-perf"],
                            "args": ["--config_file", "/etc/inference-perf/config.yaml"],
                            "resources": {
                                "requests": {"cpu": str(stack.settings.bench.num_workers), "memory": "8Gi"},
                                "limits": {"memory": "8Gi"},
                            },
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/inference-perf", "readOnly": True},
                                {"name": "model", "mountPath": stack.model_dir, "readOnly": True},
                                {"name": "reports", "mountPath": "/reports"},
                            ],
                            "securityContext": CONTAINER_SECURITY,
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": name}},
                            gcs_volume(stack, "model", stack.model.gcs_path),
                            {"name": "reports", "emptyDir": {"sizeLimit": "1Gi"}},
                        ],
                    },
                },
            },
        },
    ]
