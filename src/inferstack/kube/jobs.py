"""The Jobs: model (and draft head) download Hugging Face -> GCS, and the inference-perf benchmark.

Invariants: the Hugging Face token comes from a Kubernetes Secret or from Secret Manager (through
a SecretProviderClass), mounted as a file (HF_TOKEN_PATH), never an argument or an env literal; a
download is idempotent (it skips when the folder is complete: our marker, or config.json plus
every weight file its index names, as the reference's download Job leaves it) and writes the
marker last; the download Jobs run on a large-disk ComputeClass; the benchmark waits for the
server's /health before it starts its sweep.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from inferstack.errors import ConfigError
from inferstack.kube.serving import CONTAINER_SECURITY, POD_SECURITY, gcs_volume
from inferstack.kube.stack import DONE_MARKER, VLLM_PORT, Stack

__all__ = ["BENCH_DATASETS", "benchmark_objects", "dataset_for", "download_job", "download_jobs",
           "inference_perf_config", "secret_provider_class"]

_TOKEN_DIR = "/var/run/secrets/huggingface.co"
_DATASET_DIR = "/datasets"

# The reference architecture's benchmark dataset per speculative method (inference-perf-bench/
# vllm-spec-decoding/sd-ngram and sd-eagle); inference-perf 0.7.0 has both generators.
BENCH_DATASETS: dict[str, str] = {
    "none": "synthetic",
    "ngram": "cnn_dailymail",
    "eagle": "shareGPT",
    "eagle3": "shareGPT",
}

# Complete already? Our marker, or (a folder the reference's download Job filled) config.json and
# every weight file its index names. python3 is in the cloud-sdk image.
_COMPLETE_PY = r"""
import json, subprocess, sys
base = sys.argv[1]
def ls(pattern):
    out = subprocess.run(["gcloud", "storage", "ls", pattern], capture_output=True, text=True)
    return {line.rsplit("/", 1)[-1] for line in out.stdout.split()} if out.returncode == 0 else set()
names = ls(base + "/*")
if "%(marker)s" in names:
    sys.exit(0)
if "config.json" not in names:
    sys.exit(1)
for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
    if index in names:
        text = subprocess.run(["gcloud", "storage", "cat", base + "/" + index], capture_output=True,
                              text=True, check=True).stdout
        sys.exit(0 if set(json.loads(text)["weight_map"].values()) <= names else 1)
sys.exit(0 if names & {"model.safetensors", "pytorch_model.bin"} else 1)
"""

_DOWNLOAD_SCRIPT = """\
set -o errexit -o nounset -o pipefail
if python3 -c "${COMPLETE_PY}" "gs://${BUCKET}/${TARGET}"; then
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


def secret_provider_class(stack: Stack) -> dict[str, Any]:
    """The Hugging Face token from Secret Manager, as the reference's ``huggingface-token-read``."""
    settings = stack.settings
    resource = (f"projects/{settings.project}/secrets/{settings.hf_token_secret_manager_secret}"
                "/versions/latest")
    return {
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": stack.meta(settings.hf_token_secret, "hf-token", shared=True),
        "spec": {
            "provider": "gke",
            "parameters": {"secrets": yaml.safe_dump([{"resourceName": resource, "path": "token"}],
                                                     sort_keys=False)},
        },
    }


def _token_volume(stack: Stack, gated: bool) -> dict[str, Any] | None:
    settings = stack.settings
    if settings.hf_token_source == "secret-manager":
        if not gated:  # a CSI mount of a missing secret would keep a public download from starting
            return None
        return {"name": "hf-token", "csi": {
            "driver": "secrets-store-gke.csi.k8s.io",
            "readOnly": True,
            "volumeAttributes": {"secretProviderClass": settings.hf_token_secret},
        }}
    return {
        "name": "hf-token",
        "secret": {
            "secretName": settings.hf_token_secret,
            "items": [{"key": "token", "path": "token"}],
            # Public repositories download without a token.
            "optional": not gated,
        },
    }


def download_job(stack: Stack, name: str, repo_id: str, target: str, size_bytes: float,
                  gated: bool) -> dict[str, Any]:
    scratch_gi = max(10, math.ceil(size_bytes * 1.1 / 2**30) + 5)
    token = _token_volume(stack, gated)
    mounts: list[dict[str, Any]] = [{"name": "local", "mountPath": "/local"}]
    env = [
        {"name": "REPO_ID", "value": repo_id},
        {"name": "BUCKET", "value": stack.bucket},
        {"name": "TARGET", "value": target},
        {"name": "HF_HOME", "value": "/local/hf-home"},
        {"name": "COMPLETE_PY", "value": _COMPLETE_PY.strip() % {"marker": DONE_MARKER}},
    ]
    if token is not None:
        mounts.append({"name": "hf-token", "mountPath": _TOKEN_DIR, "readOnly": True})
        env.insert(3, {"name": "HF_TOKEN_PATH", "value": f"{_TOKEN_DIR}/token"})
    selector = {"iam.gke.io/gke-metadata-server-enabled": "true"}
    if stack.settings.compute_class:
        selector = {"cloud.google.com/compute-class": stack.download_compute_class, **selector}
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
                    "nodeSelector": selector,
                    "containers": [{
                        "name": "download",
                        "image": stack.settings.images.downloader,
                        "command": ["/bin/bash", "-c", _DOWNLOAD_SCRIPT % {"marker": DONE_MARKER}],
                        "env": env,
                        "resources": {
                            "requests": {"cpu": "2", "memory": "8Gi", "ephemeral-storage": f"{scratch_gi}Gi"},
                            "limits": {"memory": "8Gi", "ephemeral-storage": f"{scratch_gi}Gi"},
                        },
                        "volumeMounts": mounts,
                        "securityContext": CONTAINER_SECURITY,
                    }],
                    "volumes": [{"name": "local", "emptyDir": {"sizeLimit": f"{scratch_gi}Gi"}}]
                    + ([token] if token is not None else []),
                },
            },
        },
    }


def download_jobs(stack: Stack) -> list[dict[str, Any]]:
    jobs = [
        download_job(stack, f"{stack.name}-dl-model", stack.model.hf_id, stack.model.gcs_path,
                      stack.model.weight_bytes, stack.model.gated)
    ]
    if stack.draft:
        draft_bytes = stack.plan.chosen.draft * stack.plan.tensor_parallel_size
        jobs.append(
            download_job(stack, f"{stack.name}-dl-draft", stack.draft.hf_id, stack.draft.hf_id.lower(),
                          draft_bytes, gated=False)
        )
    return jobs


def _base_url(stack: Stack) -> str:
    url = stack.settings.bench.through_gateway_url
    return url or f"http://{stack.name}.{stack.namespace}.svc.cluster.local:{VLLM_PORT}"


def dataset_for(stack: Stack) -> str:
    """The inference-perf data type: the setting, or the reference's choice for the method."""
    chosen = stack.settings.bench.dataset
    return BENCH_DATASETS[stack.settings.spec] if chosen == "auto" else chosen


def _dataset_file(stack: Stack) -> tuple[str, str] | None:
    """(folder in the bucket, file name) of bench.dataset_path, or None."""
    path = stack.settings.bench.dataset_path
    if path is None:
        return None
    folder, _, name = path.strip("/").rpartition("/")
    if not folder or not name.endswith(".json"):
        raise ConfigError(
            f"bench.dataset_path has value {path!r}; must be the object path of a .json file inside a "
            f"folder of the bucket, e.g. datasets/ShareGPT_V3_unfiltered_cleaned_split.json"
        )
    return folder, name


def _data_config(stack: Stack) -> dict[str, Any]:
    bench = stack.settings.bench
    kind = dataset_for(stack)
    if kind != "synthetic":
        data: dict[str, Any] = {"type": kind}
        located = _dataset_file(stack)
        if located is not None:
            data["path"] = f"{_DATASET_DIR}/{located[1]}"
        return data
    if bench.dataset_path is not None:
        raise ConfigError(
            f"bench.dataset_path has value {bench.dataset_path!r} but the benchmark dataset resolves to "
            f"'synthetic' (bench.dataset '{bench.dataset}', spec '{stack.settings.spec}'): set "
            f"bench.dataset to shareGPT or cnn_dailymail, or drop dataset_path"
        )
    mml = stack.plan.max_model_len
    in_max = max(16, min(4 * bench.input_mean_tokens, mml // 2))
    out_max = max(16, min(4 * bench.output_mean_tokens, mml // 4))
    in_mean = min(bench.input_mean_tokens, in_max)
    out_mean = min(bench.output_mean_tokens, out_max)
    return {
        "type": "synthetic",
        "input_distribution": {"min": min(16, in_mean), "max": in_max, "mean": in_mean,
                               "std_dev": max(1, in_mean // 2)},
        "output_distribution": {"min": min(16, out_mean), "max": out_max, "mean": out_mean,
                                "std_dev": max(1, out_mean // 2)},
    }


def inference_perf_config(stack: Stack) -> dict[str, Any]:
    """inference-perf (0.7.0 schema): the method's dataset, linear sweep up to saturation."""
    bench = stack.settings.bench
    bucket = bench.results_bucket or stack.bucket
    return {
        "api": {"type": "completion", "streaming": True},
        "data": _data_config(stack),
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
    located = _dataset_file(stack) if dataset_for(stack) != "synthetic" else None
    mounts = [
        {"name": "config", "mountPath": "/etc/inference-perf", "readOnly": True},
        {"name": "model", "mountPath": stack.model_dir, "readOnly": True},
        {"name": "reports", "mountPath": "/reports"},
    ]
    volumes = [
        {"name": "config", "configMap": {"name": name}},
        gcs_volume(stack, "model", stack.model.gcs_path),
        {"name": "reports", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    if located is not None:
        mounts.append({"name": "dataset", "mountPath": _DATASET_DIR, "readOnly": True})
        volumes.append(gcs_volume(stack, "dataset", located[0]))
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
                            # Workers mostly wait on the network: a quarter core each (the
                            # reference runs 20 workers on a 4-vCPU node).
                            "resources": {
                                "requests": {"cpu": str(max(1, math.ceil(stack.settings.bench.num_workers / 4))),
                                             "memory": "8Gi"},
                                "limits": {"memory": "8Gi"},
                            },
                            "volumeMounts": mounts,
                            "securityContext": CONTAINER_SECURITY,
                        }],
                        "volumes": volumes,
                    },
                },
            },
        },
    ]
