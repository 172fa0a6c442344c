"""Sizing: the arithmetic, the choice rule, and agreement with the reference architecture.

``EXPLAINED_DISAGREEMENTS`` is the list docs/kube.md explains pair by pair; the agreement test
fails if the math starts disagreeing anywhere else (or stops disagreeing there), so the table in
the docs cannot silently go stale.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferstack.errors import ConfigError
from inferstack.models import sizing
from inferstack.models.catalog import (
    ACCELERATORS,
    GIB,
    MODELS,
    REFERENCE_TABLE,
    REFERENCE_UNSUPPORTED,
    get_accelerator,
    get_model,
)
from inferstack.models.sizing import DoesNotFitError, SizingPolicy, draft_head_parameters, recommend

EXPLAINED_DISAGREEMENTS = {
    ("gemma-3-27b-it", "l4"): (4, 8),
    ("gpt-oss-20b", "l4"): (1, 8),
    ("llama-3.3-70b-instruct", "h200"): (2, 4),
    ("llama-4-scout-17b-16e-instruct", "h100"): (4, 8),
    ("llama-4-scout-17b-16e-instruct", "h200"): (2, 8),
    ("llama-4-scout-17b-16e-instruct", "rtx-pro-6000"): (4, 1),
    ("gemma-3-27b-it", "v6e"): (4, 8),
}


def plan_for(model: str, acc: str, **kw: object) -> sizing.Plan:
    return recommend(get_model(model), get_accelerator(acc), **kw)  # type: ignore[arg-type]


def test_public_surface_is_declared() -> None:
    for name in sizing.__all__:
        assert hasattr(sizing, name), name


def test_llama_70b_on_h100_is_four_gpus_tp4_full_context() -> None:
    plan = plan_for("llama-3.3-70b-instruct", "h100")
    assert (plan.devices, plan.tensor_parallel_size, plan.pipeline_parallel_size) == (4, 4, 1)
    assert plan.max_model_len == 131072
    assert plan.shape.compute_class == "gpu-h100-80gb-high-x4"
    lines = plan.explain()
    assert "tensor-parallel-size: 4" in lines
    assert any(line.startswith("  2:") and "< target 131,072" in line for line in lines)
    assert any("<== chosen" in line and line.startswith("  4:") for line in lines)


def test_llama_70b_on_one_l4_does_not_fit_and_says_why() -> None:
    with pytest.raises(DoesNotFitError) as err:
        plan_for("llama-3.3-70b-instruct", "l4", gpus=1)
    text = str(err.value)
    assert "does not fit on l4" in text and "the weights do not fit" in text
    assert "131.5 GiB weights" in text


def test_llama_70b_on_eight_l4_is_too_slow_to_be_useful() -> None:
    with pytest.raises(DoesNotFitError, match="too slow"):
        plan_for("llama-3.3-70b-instruct", "l4")


def test_kv_arithmetic_of_one_candidate() -> None:
    plan = plan_for("llama-3.3-70b-instruct", "h100", gpus=1 * 4)
    c = plan.chosen
    # 2 (K,V) x 8 KV heads / TP 4 x 128 dims x 2 bytes = 1 KiB per token per layer on each GPU.
    assert c.kv_per_token_layer == 1024 and c.full_layers == 80 and c.local_layers == 0
    assert c.kv_bytes(131072) == 1024 * 80 * 131072
    assert c.usable == pytest.approx(79.65 * 0.95 * GIB)
    assert c.weights == pytest.approx(141.2e9 / 4)
    assert c.kv_free == pytest.approx(c.usable - c.weights - c.draft - c.activations - c.runtime)
    assert c.longest_context() == 131072  # capped at the native context


def test_sliding_window_layers_cost_only_their_window_on_gpus() -> None:
    gpu = plan_for("gemma-3-27b-it", "h100").chosen
    assert (gpu.full_layers, gpu.local_layers, gpu.window) == (10, 52, 1024)
    assert gpu.kv_bytes(131072) == gpu.kv_per_token_layer * (10 * 131072 + 52 * 1024)
    tpu = plan_for("gemma-3-27b-it", "v6e").chosen
    assert (tpu.full_layers, tpu.local_layers, tpu.window) == (62, 0, None)
    scout = plan_for("llama-4-scout-17b-16e-instruct", "h100").chosen  # chunked: budgeted fully
    assert (scout.full_layers, scout.local_layers) == (48, 0)


def test_tensor_parallel_sizes_respect_heads_and_shapes() -> None:
    smol = plan_for("smollm2-135m-instruct", "h100", gpus=1)
    assert smol.tensor_parallel_size == 1
    with pytest.raises(DoesNotFitError, match="9 attention heads are not divisible by 2"):
        plan_for("smollm2-135m-instruct", "h100", gpus=2)
    with pytest.raises(ConfigError, match="--gpus has value 3; h100 offers GPUs per node: 1, 2, 4, 8"):
        plan_for("qwen3-32b", "h100", gpus=3)
    with pytest.raises(ConfigError, match="chips \\(a TPU slice\\) per node: 1, 4, 8"):
        plan_for("qwen3-32b", "v6e", gpus=2)
    h200_one = plan_for("qwen3-32b", "h200", gpus=1)
    assert h200_one.shape.compute_class == "gpu-h200-141gb-ultra-x8"  # a pod takes 1 of 8


def test_multi_node_is_pipeline_parallel_over_full_nodes() -> None:
    plan = plan_for("llama-3.3-70b-instruct", "h100", nodes=2)
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size, plan.devices) == (8, 2, 16)
    assert "--pipeline-parallel-size=2" in plan.vllm_args()
    assert plan.chosen.full_layers == 40
    with pytest.raises(ConfigError, match="--nodes has value 0"):
        plan_for("qwen3-32b", "h100", nodes=0)


def test_requested_context_must_fit_entirely() -> None:
    plan = plan_for("qwen3-32b", "h100", max_model_len=8192)
    assert plan.max_model_len == 8192 and plan.devices == 1
    with pytest.raises(DoesNotFitError, match="< floor 131,072"):
        plan_for("llama-3.3-70b-instruct", "h100", gpus=2, max_model_len=131072)
    with pytest.raises(ConfigError, match="must be in 1..32768 \\(qwen3-32b's native context\\)"):
        plan_for("qwen3-32b", "h100", max_model_len=65536)


def test_with_the_reference_contexts_llama_4_scout_agrees_on_8_gpus() -> None:
    # The reference serves Scout at 1M (H100) and 3.6M (H200) tokens; we target 128k by default.
    assert plan_for("llama-4-scout-17b-16e-instruct", "h100", max_model_len=1_000_000).devices == 8
    assert plan_for("llama-4-scout-17b-16e-instruct", "h200", max_model_len=3_600_000).devices == 8


def test_eagle_heads_add_weights_and_a_kv_layer() -> None:
    plain = plan_for("llama-3.3-70b-instruct", "h100").chosen
    eagle = plan_for("llama-3.3-70b-instruct", "h100", spec_method="eagle3").chosen
    assert eagle.draft == pytest.approx(draft_head_parameters(get_model("llama-3.3-70b-instruct"), "eagle3") * 2 / 4)
    assert eagle.full_layers == plain.full_layers + 1
    assert 1.0e9 < draft_head_parameters(get_model("llama-3.3-70b-instruct"), "eagle3") < 2.0e9
    assert plan_for("qwen3-32b", "h100", spec_method="ngram").chosen.draft == 0


def test_eagle_without_a_published_head_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no published eagle head is known for gemma-3-27b-it; use --spec ngram"):
        plan_for("gemma-3-27b-it", "h100", spec_method="eagle")
    with pytest.raises(ConfigError, match="or --spec eagle3"):
        plan_for("llama-3.3-70b-instruct", "h100", spec_method="eagle")


def test_bad_utilization_is_rejected() -> None:
    with pytest.raises(ConfigError, match="gpu-memory-utilization has value 1.5"):
        plan_for("qwen3-32b", "h100", gpu_memory_utilization=1.5)


def test_agreement_with_the_reference_architecture() -> None:
    disagreements = {}
    for pair in REFERENCE_TABLE:
        plan = plan_for(pair.model, pair.accelerator)
        if plan.tensor_parallel_size != pair.tensor_parallel_size:
            disagreements[(pair.model, pair.accelerator)] = (plan.tensor_parallel_size, pair.tensor_parallel_size)
    assert disagreements == EXPLAINED_DISAGREEMENTS
    assert len(REFERENCE_TABLE) - len(disagreements) == 19


def test_reference_unsupported_pairs() -> None:
    for model, acc in REFERENCE_UNSUPPORTED:
        if model.startswith("llama"):
            with pytest.raises(DoesNotFitError):
                plan_for(model, acc)
        else:  # "no manifest shipped": a 1B/4B model fits on one big GPU
            assert plan_for(model, acc).devices == 1


def test_defaults_are_described() -> None:
    for name, field in SizingPolicy.model_fields.items():
        assert field.description, name


@settings(max_examples=150, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    acc=st.sampled_from(ACCELERATORS),
    util=st.floats(min_value=0.5, max_value=0.98),
    spec=st.sampled_from(["none", "ngram", "eagle", "eagle3"]),
)
def test_every_plan_is_self_consistent(model, acc, util, spec) -> None:  # type: ignore[no-untyped-def]
    try:
        plan = recommend(model, acc, gpu_memory_utilization=util, spec_method=spec)
    except DoesNotFitError as exc:
        assert "does not fit" in str(exc)
        return
    except ConfigError as exc:
        assert "no published" in str(exc)
        return
    c = plan.chosen
    assert c.kv_free > 0
    assert plan.max_model_len <= model.max_context
    assert c.kv_bytes(plan.max_model_len) <= c.kv_free
    assert model.num_attention_heads % plan.tensor_parallel_size == 0
    assert 1 <= plan.max_num_seqs <= plan.policy.max_num_seqs_cap <= plan.max_num_batched_tokens
    assert c.decode_tokens_per_s >= plan.policy.min_decode_tokens_per_s
    assert plan.shape.accelerators >= plan.devices_per_node
    # Fewest devices: no smaller valid count holds what this plan holds.
    smaller = [x for x in plan.candidates if x.devices_per_node < c.devices_per_node]
    assert not any(x.holds_target for x in smaller)
    assert math.isfinite(c.decode_tokens_per_s)
