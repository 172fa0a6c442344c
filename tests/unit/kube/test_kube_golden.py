"""Golden files: the exact rendered directory for a representative set of deployments.

Covers each accelerator, each speculative method, gateway on/off, autoscaling on/off (HPA and a
KEDA ScaledObject with several metrics and a behavior), multi-node,
both endpoint pickers, each cold-start mode, both token sources, both compute-class namings, LoRA
adapters (flags, syncer sidecar and ConfigMap, adapter download Job, objectives), and
the three stacks the issue compares with the reference architecture (h100 + Llama 3.3 70B + EAGLE,
h100 + Gemma 3 27B + ngram, l4 + Qwen3 32B), each with a user bucket, project and namespace.
A change in the output shows up as a diff here; when it is intended, regenerate:

    INFERSTACK_UPDATE_GOLDEN=1 pytest tests/unit/kube/test_kube_golden.py
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from inferstack.kube import RenderSettings, render, validate_objects, write

GOLDEN = Path(__file__).parent / "golden"

USER = {"model_bucket": "acme-llm-weights", "project": "acme-prod"}

CASES: dict[str, dict[str, Any]] = {
    "l4-gemma-3-1b-it": {"model": "gemma-3-1b-it", "accelerator": "l4"},
    "h100-llama-3.3-70b-instruct": {"model": "llama-3.3-70b-instruct", "accelerator": "h100"},
    "h100-llama-3.3-70b-instruct-eagle3": {"model": "llama-3.3-70b-instruct", "accelerator": "h100",
                                           "spec": "eagle3", "namespace": "llm"},
    "h100-llama-3.3-70b-instruct-eagle3-2nodes": {
        "model": "llama-3.3-70b-instruct", "accelerator": "h100", "spec": "eagle3", "nodes": 2},
    "h100-gemma-3-27b-it-ngram-reference-classes": {
        "model": "gemma-3-27b-it", "accelerator": "h100", "spec": "ngram", "namespace": "llm",
        "compute_class_names": "reference", "gateway": {"gateway_class": "gke-l7-rilb"}},
    "l4-qwen3-32b-secret-manager": {"model": "qwen3-32b", "accelerator": "l4", "namespace": "llm",
                                    "hf_token_source": "secret-manager"},
    "h100-llama-4-scout-eagle": {"model": "llama-4-scout-17b-16e-instruct", "accelerator": "h100", "spec": "eagle"},
    "h200-qwen3-32b-eagle3-our-epp-runai": {
        "model": "qwen3-32b", "accelerator": "h200", "spec": "eagle3", "cold_start": {"mode": "runai-streamer"},
        "gateway": {"epp": "inferstack"}, "images": {"epp": "us-docker.pkg.dev/acme-prod/inference/inferstack:0.1.0"}},
    "l4-gemma-3-1b-it-batch-our-epp": {
        "model": "gemma-3-1b-it", "accelerator": "l4", "batch": {"enabled": True}, "gateway": {"epp": "inferstack"},
        "images": {"epp": "us-docker.pkg.dev/acme-prod/inference/inferstack:0.1.0"}},
    "rtx-pro-6000-gpt-oss-20b-ngram": {"model": "gpt-oss-20b", "accelerator": "rtx-pro-6000", "spec": "ngram"},
    "v5e-gemma-3-27b-it-no-autoscale": {"model": "gemma-3-27b-it", "accelerator": "v5e",
                                         "autoscaling": {"enabled": False}},
    "h100-qwen3-32b-keda": {
        "model": "qwen3-32b", "accelerator": "h100", "namespace": "llm",
        "autoscaling": {"autoscaler": "keda", "min_replicas": 1, "max_replicas": 6,
                        "metrics": [{"metric": "waiting", "target": 3}, {"metric": "kv", "target": 0.8}],
                        "behavior": {"scale_up": {"policies": [{"type": "Pods", "value": 2, "period_s": 60}]},
                                     "scale_down": {"stabilization_window_s": 600, "select_policy": "Min",
                                                    "policies": [{"type": "Pods", "value": 1, "period_s": 120}]}}}},
    "v6e-qwen3-32b-no-gateway": {"model": "qwen3-32b", "accelerator": "v6e", "gateway": {"enabled": False}},
    "h100-qwen3-32b-lora": {
        "model": "qwen3-32b", "accelerator": "h100",
        "lora": {"enabled": True, "max_loras": 2, "max_lora_rank": 16, "max_cpu_loras": 4,
                 "adapters": {"sql-lora": "Some-Org/Qwen3-32B-SQL-LoRA",
                              "support-v3": "gs://acme-llm-weights/adapters/support/v3"}}},
    "l4-smollm2-bare": {"model": "smollm2-135m-instruct", "accelerator": "l4", "gateway": {"enabled": False},
                        "autoscaling": {"enabled": False}, "compute_class": False, "cold_start": {"mode": "fuse"}},
}


def snapshot(directory: Path) -> str:
    parts = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        parts.append(f"# ===== {path.relative_to(directory).as_posix()}\n{path.read_text()}")
    return "".join(parts)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, tmp_path: Path) -> None:
    rendered = render(RenderSettings(**{**USER, **CASES[case]}))
    assert validate_objects(rendered.objects()) == []
    write(rendered, tmp_path)
    text = snapshot(tmp_path)
    golden = GOLDEN / f"{case}.txt"
    if os.environ.get("INFERSTACK_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}: run with INFERSTACK_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{case} differs from {golden.name}; regenerate if intended"


def test_no_stale_golden_files() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.txt")) == sorted(CASES)
