"""LoRA adapters on GKE (``lora:`` in the render config, ``render --lora``): the lora-syncer's
ConfigMap, the Jobs that copy hub adapters into the bucket, one InferenceObjective per adapter.

The pieces in the vLLM pod (flags, the runtime-API environment, the adapters volume and the
syncer sidecar) are built in ``serving``; the picker's objectives and LoRA scorer in ``gateway``.

Invariants: the ConfigMap's ``vLLMLoRAConfig`` is the one list of adapters a pod holds (vLLM gets
no ``--lora-modules``), names every adapter with the served base model, and parses with
``inferstack.lora.parse_syncer_config`` (the local syncer's reader); each source is a folder under
the mounted adapters folder, never a hub id (vLLM pods run with HF_HUB_OFFLINE=1 and no token):
hub adapters reach the bucket through a download Job like the model's.
"""

from __future__ import annotations

from typing import Any

import yaml

from inferstack.kube.jobs import download_job
from inferstack.kube.serving import SYNCER_CONFIG_FILE
from inferstack.kube.stack import ADAPTERS_DIR, VLLM_PORT, Stack

__all__ = ["adapter_download_jobs", "adapter_objectives", "adapter_priority", "syncer_config", "syncer_configmap"]


def syncer_config(stack: Stack) -> dict[str, Any]:
    """The lora-syncer's file: every adapter of ``lora.adapters`` under ``ensureExist``."""
    return {"vLLMLoRAConfig": {
        "name": stack.adapters_configmap,
        "port": VLLM_PORT,
        "defaultBaseModel": stack.served_name,
        "ensureExist": {"models": [{"id": a.name, "source": a.pod_path} for a in stack.adapters]},
    }}


def _syncer_text(stack: Stack) -> str:
    bucket_folder = f"gs://{stack.bucket}/{stack.settings.lora.adapters_folder}"
    header = (
        f"# The LoRA adapters every {stack.name} pod holds. The lora-syncer sidecar applies an edit\n"
        f"# (kubectl -n {stack.namespace} edit configmap {stack.adapters_configmap}) within seconds:\n"
        "# add {id: NAME, source: PATH} to ensureExist.models to load, move it to ensureNotExist.models\n"
        f"# to unload. PATH is a folder under {ADAPTERS_DIR}, which is {bucket_folder}/ (read-only).\n"
        "# Requests for an adapter without an InferenceObjective named after it get priority 0.\n"
    )
    return header + yaml.safe_dump(syncer_config(stack), sort_keys=False, default_flow_style=False)


def syncer_configmap(stack: Stack) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": stack.meta(stack.adapters_configmap, "lora-syncer"),
        "data": {SYNCER_CONFIG_FILE: _syncer_text(stack)},
    }


def adapter_download_jobs(stack: Stack) -> list[dict[str, Any]]:
    """One Job per distinct hub id: Hugging Face -> gs://BUCKET/<adapters_folder>/<hub id, lower-case>;
    the Hugging Face token is mounted as for the model (required when the model is gated)."""
    folder = stack.settings.lora.adapters_folder
    return [download_job(stack, name, hub_id, f"{folder}/{hub_id.lower()}", 0, stack.model.gated)
            for name, hub_id in stack.adapter_download_jobs]


def adapter_priority(stack: Stack) -> int:
    lora = stack.settings.lora
    return lora.priority if lora.priority is not None else stack.settings.gateway.priority


def adapter_objectives(stack: Stack, pool: str) -> list[dict[str, Any]]:
    """One InferenceObjective per adapter, named after it (GIE's own LoRA examples do the same)."""
    return [
        {
            "apiVersion": "inference.networking.x-k8s.io/v1alpha2",
            "kind": "InferenceObjective",
            "metadata": stack.meta(a.name, "inference-objective"),
            "spec": {"poolRef": {"name": pool}, "priority": adapter_priority(stack)},
        }
        for a in stack.adapters
    ]
