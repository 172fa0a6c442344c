"""The catalog: lookups, the bundled entry, internal consistency, the reference table's links."""

from __future__ import annotations

import re

import pytest

from inferstack.errors import ConfigError, ModelNotFoundError
from inferstack.models import catalog
from inferstack.models.catalog import (
    ACCELERATORS,
    MODELS,
    REFERENCE_TABLE,
    REFERENCE_UNSUPPORTED,
    find_reference,
    get_accelerator,
    get_model,
)

ISSUE_MODELS = {
    "google/gemma-3-1b-it", "google/gemma-3-4b-it", "google/gemma-3-27b-it", "openai/gpt-oss-20b",
    "meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-4-Scout-17B-16E-Instruct", "Qwen/Qwen3-32B",
    "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def test_public_surface_is_declared() -> None:
    for name in catalog.__all__:
        assert hasattr(catalog, name), name


def test_catalog_has_the_required_models_and_accelerators() -> None:
    assert {m.hf_id for m in MODELS} >= ISSUE_MODELS
    assert {a.short_name for a in ACCELERATORS} == {"l4", "h100", "h200", "rtx-pro-6000", "v5e", "v6e"}
    nominal = {a.short_name: a.memory_gb for a in ACCELERATORS}
    assert nominal["l4"] == 24 and nominal["h100"] == 80 and nominal["h200"] == 141
    assert nominal["rtx-pro-6000"] == 96


def test_bundled_entry_matches_the_local_bundled_model() -> None:
    from inferstack.models.bundled import BUNDLED

    smol = get_model("smollm2-135m-instruct")
    assert smol.bundled and smol.name == BUNDLED.served_name == "smollm2-135m-instruct"
    assert smol.hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert [m.name for m in MODELS if m.bundled] == ["smollm2-135m-instruct"]


@pytest.mark.parametrize("ref", ["llama-3.3-70b-instruct", "meta-llama/Llama-3.3-70B-Instruct",
                                 "META-LLAMA/llama-3.3-70b-instruct", " llama-3.3-70b-instruct "])
def test_model_lookup_by_served_name_or_hub_id_in_any_case(ref: str) -> None:
    assert get_model(ref).name == "llama-3.3-70b-instruct"


def test_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(ModelNotFoundError, match="not in the catalog; valid: .*qwen3-32b"):
        get_model("gpt-5")


@pytest.mark.parametrize("ref", ["h100", "nvidia-h100-80gb", "H100"])
def test_accelerator_lookup(ref: str) -> None:
    assert get_accelerator(ref).name == "nvidia-h100-80gb"


def test_unknown_accelerator_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="'a100' is not in the catalog; valid: l4 \\(nvidia-l4\\)"):
        get_accelerator("a100")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_model_figures_are_consistent(model: catalog.ModelSpec) -> None:
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", model.name)
    assert model.num_attention_heads % model.num_kv_heads == 0
    assert 0 < model.layers_full <= model.num_layers
    assert (model.local_attention_window is None) == (model.local_attention_kind is None)
    if model.full_attention_layers is not None:
        assert model.local_attention_window is not None
    assert model.active_weight_bytes <= model.weight_bytes
    assert model.gcs_path == model.hf_id.lower()
    for method in ("eagle", "eagle3"):
        head = model.draft_head(method)
        if head:
            assert "/" in head.hf_id and head.source


def test_published_figures_spot_checks() -> None:
    llama = get_model("llama-3.3-70b-instruct")
    assert (llama.num_layers, llama.num_kv_heads, llama.head_dim, llama.max_context) == (80, 8, 128, 131072)
    assert llama.weight_bytes == pytest.approx(141.2e9)
    assert llama.eagle3 is not None and llama.eagle3.hf_id == "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B"
    gemma = get_model("gemma-3-27b-it")
    assert (gemma.num_layers, gemma.layers_full, gemma.local_attention_window) == (62, 10, 1024)
    scout = get_model("llama-4-scout-17b-16e-instruct")
    assert scout.local_attention_kind == "chunked" and scout.eagle is not None and scout.eagle3 is None
    assert get_model("gemma-3-1b-it").eagle is None and get_model("gemma-3-1b-it").eagle3 is None


@pytest.mark.parametrize("acc", ACCELERATORS, ids=lambda a: a.short_name)
def test_accelerator_shapes(acc: catalog.Accelerator) -> None:
    counts = [s.accelerators for s in acc.shapes]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert acc.usable_memory_gib * 2**30 <= acc.memory_gb * 1e9 * 1.075  # GiB vs GB, never more
    assert acc.shape_for(1) is acc.shapes[0]
    assert acc.shape_for(acc.max_per_node + 1) is None
    for shape in acc.shapes:
        assert (shape.tpu_topology is not None) == (acc.kind == "tpu")
        assert re.fullmatch(r"[a-z0-9-]+", shape.compute_class)


def test_reference_table_links_to_the_catalog() -> None:
    for pair in REFERENCE_TABLE:
        model, acc = get_model(pair.model), get_accelerator(pair.accelerator)
        assert model.name == pair.model
        shape = acc.shape_for(pair.gpus)
        assert shape is not None and shape.compute_class == pair.compute_class, pair
        assert find_reference(pair.model, pair.accelerator) == pair
    for model_name, acc_name in REFERENCE_UNSUPPORTED:
        get_model(model_name), get_accelerator(acc_name)
        assert find_reference(model_name, acc_name) is None
    assert find_reference("llama-3.3-70b-instruct", "h100").tensor_parallel_size == 4
