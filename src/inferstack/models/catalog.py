"""The catalog: models and accelerators, with the figures that sizing and rendering need.

Invariants:

- Every figure is a published one (the model's ``config.json`` / model card, the GKE machine
  and compute-class definitions, NVIDIA's datasheets), except the fields whose description says
  *estimate*; those say how they are estimated.
- A model is found by its served name (``llama-3.3-70b-instruct``), its Hugging Face id
  (``meta-llama/Llama-3.3-70B-Instruct``, any case) or one of its aliases. An accelerator is
  found by its GKE accelerator name (``nvidia-h100-80gb``) or its short name (``h100``).
- ``REFERENCE_TABLE`` is the GKE inference reference architecture's published configuration
  (GoogleCloudPlatform/accelerated-platforms, ``inference-ref-arch``) for the pairs it ships;
  ``REFERENCE_UNSUPPORTED`` are the pairs its documentation marks as not supported. They are
  data to compare against, never inputs to the sizing math.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from inferstack.errors import ConfigError, ModelNotFoundError

__all__ = [
    "ACCELERATORS",
    "MODELS",
    "REFERENCE_SOURCE",
    "REFERENCE_TABLE",
    "REFERENCE_UNSUPPORTED",
    "Accelerator",
    "DraftHead",
    "ModelSpec",
    "NodeShape",
    "ReferencePair",
    "find_reference",
    "get_accelerator",
    "get_model",
]

GIB = 1024**3


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DraftHead(_Frozen):
    """A published EAGLE / EAGLE-3 head trained for one target model."""

    hf_id: str = Field(description="Hugging Face id of the head (what the download Job fetches).")
    source: str = Field(description="Where it is published or used, so a reader can check it.")


class ModelSpec(_Frozen):
    """One servable model and the architecture figures that the sizing math needs."""

    name: str = Field(description="Served name: what clients send as 'model' (vLLM --served-model-name).")
    hf_id: str = Field(description="Hugging Face repository id.")
    aliases: tuple[str, ...] = Field((), description="Other names accepted on the command line.")
    parameters_b: float = Field(gt=0, description="Total parameters, in billions (model card).")
    active_parameters_b: float | None = Field(
        None,
        gt=0,
        description="Parameters read per generated token, billions (MoE models); None = all.",
    )
    weight_dtype: str = Field(description="How the published checkpoint stores its weights.")
    bytes_per_parameter: float = Field(
        gt=0,
        description="Bytes per parameter of the published checkpoint (2.0 for bf16; for mixed "
        "formats the checkpoint size divided by the parameter count).",
    )
    num_layers: int = Field(gt=0, description="Decoder layers (num_hidden_layers).")
    num_attention_heads: int = Field(gt=0, description="Query heads; the tensor-parallel size must divide it.")
    num_kv_heads: int = Field(gt=0, description="Key/value heads (GQA); KV cache width.")
    head_dim: int = Field(gt=0, description="Dimension of one attention head.")
    hidden_size: int = Field(gt=0, description="Residual stream width.")
    mlp_active_width: int = Field(
        gt=0,
        description="MLP width computed per token: intermediate_size for dense models; for MoE "
        "the expert width x experts per token (+ shared expert). Drives the activation estimate.",
    )
    vocab_size: int = Field(gt=0, description="Vocabulary size (logits memory of the sampler).")
    max_context: int = Field(gt=0, description="Native context length, tokens.")
    local_attention_window: int | None = Field(
        None,
        description="Sliding-window (Gemma 3, gpt-oss) or chunked-local (Llama 4) attention span, "
        "tokens; None when every layer attends to the whole context.",
    )
    local_attention_kind: Literal["sliding", "chunked"] | None = Field(
        None, description="sliding = sliding window (Gemma 3, gpt-oss); chunked = Llama 4's chunks."
    )
    full_attention_layers: int | None = Field(
        None,
        description="Layers with full attention when the rest use the local window "
        "(vLLM's hybrid KV cache keeps only the window for the others). None = all layers.",
    )
    gated: bool = Field(description="The Hugging Face repository needs an accepted license + token.")
    bundled: bool = Field(False, description="The embedded default model of inferstack.")
    eagle: DraftHead | None = Field(None, description="A published EAGLE (v1/v2) head, if one is known.")
    eagle3: DraftHead | None = Field(None, description="A published EAGLE-3 head, if one is known.")

    @property
    def weight_bytes(self) -> float:
        return self.parameters_b * 1e9 * self.bytes_per_parameter

    @property
    def active_weight_bytes(self) -> float:
        active = self.active_parameters_b or self.parameters_b
        return active * 1e9 * self.bytes_per_parameter

    @property
    def layers_full(self) -> int:
        return self.num_layers if self.full_attention_layers is None else self.full_attention_layers

    @property
    def layers_local(self) -> int:
        return self.num_layers - self.layers_full

    @property
    def gcs_path(self) -> str:
        """Folder in the model bucket (lower-cased hub id, as the reference architecture does)."""
        return self.hf_id.lower()

    def draft_head(self, method: str) -> DraftHead | None:
        return {"eagle": self.eagle, "eagle3": self.eagle3}.get(method)


class NodeShape(_Frozen):
    """One GKE machine shape for an accelerator, and the compute class that provisions it."""

    accelerators: int = Field(gt=0, description="GPUs or TPU chips on the node.")
    machine_type: str = Field(description="Compute Engine machine type.")
    vcpus: int = Field(gt=0, description="vCPUs of the machine type.")
    memory_gb: int = Field(gt=0, description="Memory of the machine type, GB.")
    compute_class: str = Field(
        description="Custom compute class name (the reference architecture's naming).",
    )
    tpu_topology: str | None = Field(None, description="TPU slice topology (TPU shapes only).")


class Accelerator(_Frozen):
    """A GPU or TPU kind offered by GKE."""

    name: str = Field(description="GKE accelerator name (cloud.google.com/gke-accelerator value).")
    short_name: str = Field(description="Short name used by the reference architecture (h100, l4, ...).")
    kind: Literal["gpu", "tpu"]
    description: str
    memory_gb: float = Field(gt=0, description="Nominal memory per device, GB (datasheet).")
    usable_memory_gib: float = Field(
        gt=0,
        description="Memory per device the runtime sees (CUDA total as nvidia-smi reports it; TPU "
        "HBM). vLLM's gpu_memory_utilization is a fraction of this.",
    )
    resource_name: str = Field(description="Extended resource requested by pods.")
    node_label: str = Field(description="Node label key that carries the accelerator name.")
    node_label_value: str = Field(description="Value of node_label for this accelerator.")
    shapes: tuple[NodeShape, ...] = Field(description="Machine shapes, ascending accelerator count.")
    memory_bandwidth_gbps: float = Field(gt=0, description="Memory bandwidth per device, GB/s (datasheet).")
    default_gpu_memory_utilization: float = Field(
        gt=0, le=1, description="gpu_memory_utilization used unless the user sets one."
    )
    default_max_num_batched_tokens: int = Field(
        gt=0, description="Scheduler token budget per step we configure (and size activations for)."
    )
    interconnect: str = Field(description="How devices of one node talk (matters for tensor parallelism).")

    def shape_for(self, count: int) -> NodeShape | None:
        """The smallest machine shape with at least ``count`` devices, or None."""
        for shape in self.shapes:
            if shape.accelerators >= count:
                return shape
        return None

    @property
    def max_per_node(self) -> int:
        return self.shapes[-1].accelerators


# --- models -------------------------------------------------------------------------------------

_HF = "Hugging Face config.json / model card"

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="smollm2-135m-instruct",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        aliases=("smollm2", "bundled"),
        parameters_b=0.1345,
        weight_dtype="bfloat16",
        bytes_per_parameter=2.0,
        num_layers=30,
        num_attention_heads=9,
        num_kv_heads=3,
        head_dim=64,
        hidden_size=576,
        mlp_active_width=1536,
        vocab_size=49152,
        max_context=8192,
        gated=False,
        bundled=True,
    ),
    ModelSpec(
        name="gemma-3-1b-it",
        hf_id="google/gemma-3-1b-it",
        parameters_b=1.0,
        weight_dtype="bfloat16",
        bytes_per_parameter=2.0,
        num_layers=26,
        num_attention_heads=4,
        num_kv_heads=1,
        head_dim=256,
        hidden_size=1152,
        mlp_active_width=6912,
        vocab_size=262144,
        max_context=32768,
        local_attention_window=512,
        local_attention_kind="sliding",
        full_attention_layers=4,  # every 6th layer is global (sliding_window_pattern 6)
        gated=True,
    ),
    ModelSpec(
        name="gemma-3-4b-it",
        hf_id="google/gemma-3-4b-it",
        parameters_b=4.3,  # 3.9B text + 0.4B SigLIP vision tower
        weight_dtype="bfloat16",
        bytes_per_parameter=2.0,
        num_layers=34,
        num_attention_heads=8,
        num_kv_heads=4,
        head_dim=256,
        hidden_size=2560,
        mlp_active_width=10240,
        vocab_size=262208,
        max_context=131072,
        local_attention_window=1024,
        local_attention_kind="sliding",
        full_attention_layers=5,
        gated=True,
    ),
    ModelSpec(
        name="gemma-3-27b-it",
        hf_id="google/gemma-3-27b-it",
        parameters_b=27.4,
        weight_dtype="bfloat16",
        bytes_per_parameter=2.0,
        num_layers=62,
        num_attention_heads=32,
        num_kv_heads=16,
        head_dim=128,
        hidden_size=5376,
        mlp_active_width=21504,
        vocab_size=262208,
        max_context=131072,
        local_attention_window=1024,
        local_attention_kind="sliding",
        full_attention_layers=10,
        gated=True,
    ),
    ModelSpec(
        name="gpt-oss-20b",
        hf_id="openai/gpt-oss-20b",
        parameters_b=20.9,
        active_parameters_b=3.6,
        weight_dtype="MXFP4 MoE experts + bf16 attention/embeddings",
        bytes_per_parameter=0.66,  # 13.8 GB checkpoint / 20.9B parameters
        num_layers=24,
        num_attention_heads=64,
        num_kv_heads=8,
        head_dim=64,
        hidden_size=2880,
        mlp_active_width=2880 * 4,  # 32 experts of width 2880, 4 per token
        vocab_size=201088,
        max_context=131072,
        local_attention_window=128,
        local_attention_kind="sliding",
        full_attention_layers=12,  # alternating sliding / full layers
        gated=False,
        eagle3=DraftHead(
            hf_id="RedHatAI/gpt-oss-20b-speculator.eagle3",
            source="Red Hat AI speculators collection on Hugging Face",
        ),
    ),
    ModelSpec(
        name="llama-3.3-70b-instruct",
        hf_id="meta-llama/Llama-3.3-70B-Instruct",
        parameters_b=70.6,
        weight_dtype="bfloat16",
        bytes_per_parameter=2.0,
        num_layers=80,
        num_attention_heads=64,
        num_kv_heads=8,
        head_dim=128,
        hidden_size=8192,
        mlp_active_width=28672,
        vocab_size=128256,
        max_context=131072,
        gated=True,
        eagle3=DraftHead(
            hf_id="yuhuili/EAGLE3-LLaMA3.3-Instruct-70B",
            source="EAGLE authors; used by the reference architecture's vllm-spec-decoding manifests",
        ),
    ),
    ModelSpec(
        name="llama-4-scout-17b-16e-instruct",
        hf_id="meta-llama/Llama-4-Scout-17B-16E-Instruct",
        aliases=("llama-4-scout",),
        parameters_b=109.0,  # 17B active, 109B total (model card)
        active_parameters_b=17.0,
        weight_dtype="bfloat16",
        bytes_per_parameter=2.0,
        num_layers=48,
        num_attention_heads=40,
        num_kv_heads=8,
        head_dim=128,
        hidden_size=5120,
        mlp_active_width=8192 + 8192,  # 1 routed expert + the shared expert
        vocab_size=202048,
        max_context=10485760,
        local_attention_window=8192,  # every 4th layer is global (NoPE), the others chunked
        local_attention_kind="chunked",
        full_attention_layers=12,
        gated=True,
        eagle=DraftHead(
            hf_id="morgendave/EAGLE-Llama-4-Scout-17B-16E-Instruct",
            source="vLLM's speculative-decoding tests and model registry examples",
        ),
    ),
    ModelSpec(
        name="qwen3-32b",
        hf_id="Qwen/Qwen3-32B",
        parameters_b=32.8,
        weight_dtype="bfloat16",
        bytes_per_parameter=2.0,
        num_layers=64,
        num_attention_heads=64,
        num_kv_heads=8,
        head_dim=128,
        hidden_size=5120,
        mlp_active_width=25600,
        vocab_size=151936,
        max_context=32768,  # native; 131072 only with YaRN rope scaling, which we do not enable
        gated=False,
        eagle3=DraftHead(
            hf_id="AngelSlim/Qwen3-32B_eagle3",
            source="Tencent AngelSlim EAGLE-3 heads; listed in vLLM's model registry examples",
        ),
    ),
)


# --- accelerators -------------------------------------------------------------------------------

_GPU_LABEL = "cloud.google.com/gke-accelerator"
_TPU_LABEL = "cloud.google.com/gke-tpu-accelerator"

ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator(
        name="nvidia-l4",
        short_name="l4",
        kind="gpu",
        description="NVIDIA L4 24GB (G2 machines)",
        memory_gb=24,
        usable_memory_gib=22.49,  # 23034 MiB
        resource_name="nvidia.com/gpu",
        node_label=_GPU_LABEL,
        node_label_value="nvidia-l4",
        shapes=(
            NodeShape(accelerators=1, machine_type="g2-standard-8", vcpus=8, memory_gb=32,
                      compute_class="gpu-l4-24gb-s8-x1"),
            NodeShape(accelerators=2, machine_type="g2-standard-24", vcpus=24, memory_gb=96,
                      compute_class="gpu-l4-24gb-x2"),
            NodeShape(accelerators=4, machine_type="g2-standard-48", vcpus=48, memory_gb=192,
                      compute_class="gpu-l4-24gb-x4"),
            NodeShape(accelerators=8, machine_type="g2-standard-96", vcpus=96, memory_gb=384,
                      compute_class="gpu-l4-24gb-x8"),
        ),
        memory_bandwidth_gbps=300,
        default_gpu_memory_utilization=0.9,
        default_max_num_batched_tokens=2048,
        interconnect="PCIe",
    ),
    Accelerator(
        name="nvidia-h100-80gb",
        short_name="h100",
        kind="gpu",
        description="NVIDIA H100 80GB HBM3 (A3 High machines)",
        memory_gb=80,
        usable_memory_gib=79.65,  # 81559 MiB
        resource_name="nvidia.com/gpu",
        node_label=_GPU_LABEL,
        node_label_value="nvidia-h100-80gb",
        shapes=(
            NodeShape(accelerators=1, machine_type="a3-highgpu-1g", vcpus=26, memory_gb=234,
                      compute_class="gpu-h100-80gb-high-x1"),
            NodeShape(accelerators=2, machine_type="a3-highgpu-2g", vcpus=52, memory_gb=468,
                      compute_class="gpu-h100-80gb-high-x2"),
            NodeShape(accelerators=4, machine_type="a3-highgpu-4g", vcpus=104, memory_gb=936,
                      compute_class="gpu-h100-80gb-high-x4"),
            NodeShape(accelerators=8, machine_type="a3-highgpu-8g", vcpus=208, memory_gb=1872,
                      compute_class="gpu-h100-80gb-high-x8"),
        ),
        memory_bandwidth_gbps=3350,
        default_gpu_memory_utilization=0.95,
        default_max_num_batched_tokens=8192,
        interconnect="NVLink",
    ),
    Accelerator(
        name="nvidia-h200-141gb",
        short_name="h200",
        kind="gpu",
        description="NVIDIA H200 141GB HBM3e (A3 Ultra machines, 8 GPUs each)",
        memory_gb=141,
        usable_memory_gib=140.4,  # 143771 MiB
        resource_name="nvidia.com/gpu",
        node_label=_GPU_LABEL,
        node_label_value="nvidia-h200-141gb",
        shapes=(
            NodeShape(accelerators=8, machine_type="a3-ultragpu-8g", vcpus=224, memory_gb=2952,
                      compute_class="gpu-h200-141gb-ultra-x8"),
        ),
        memory_bandwidth_gbps=4800,
        default_gpu_memory_utilization=0.95,
        default_max_num_batched_tokens=8192,
        interconnect="NVLink",
    ),
    Accelerator(
        name="nvidia-rtx-pro-6000",
        short_name="rtx-pro-6000",
        kind="gpu",
        description="NVIDIA RTX PRO 6000 Blackwell 96GB (G4 machines)",
        memory_gb=96,
        usable_memory_gib=95.59,  # 97887 MiB
        resource_name="nvidia.com/gpu",
        node_label=_GPU_LABEL,
        node_label_value="nvidia-rtx-pro-6000",
        shapes=(
            NodeShape(accelerators=1, machine_type="g4-standard-48", vcpus=48, memory_gb=180,
                      compute_class="gpu-rtx-pro-6000-96gb-x1"),
            NodeShape(accelerators=2, machine_type="g4-standard-96", vcpus=96, memory_gb=360,
                      compute_class="gpu-rtx-pro-6000-96gb-x2"),
            NodeShape(accelerators=4, machine_type="g4-standard-192", vcpus=192, memory_gb=720,
                      compute_class="gpu-rtx-pro-6000-96gb-x4"),
            NodeShape(accelerators=8, machine_type="g4-standard-384", vcpus=384, memory_gb=1440,
                      compute_class="gpu-rtx-pro-6000-96gb-x8"),
        ),
        memory_bandwidth_gbps=1792,
        default_gpu_memory_utilization=0.95,
        default_max_num_batched_tokens=8192,
        interconnect="PCIe",
    ),
    Accelerator(
        name="tpu-v5-lite-podslice",
        short_name="v5e",
        kind="tpu",
        description="Cloud TPU v5e (16 GB HBM per chip, ct5lp machines)",
        memory_gb=16,
        usable_memory_gib=16.0,
        resource_name="google.com/tpu",
        node_label=_TPU_LABEL,
        node_label_value="tpu-v5-lite-podslice",
        shapes=(
            NodeShape(accelerators=1, machine_type="ct5lp-hightpu-1t", vcpus=24, memory_gb=48,
                      compute_class="tpu-v5e-1x1", tpu_topology="1x1"),
            NodeShape(accelerators=4, machine_type="ct5lp-hightpu-4t", vcpus=112, memory_gb=192,
                      compute_class="tpu-v5e-2x2", tpu_topology="2x2"),
            NodeShape(accelerators=8, machine_type="ct5lp-hightpu-8t", vcpus=224, memory_gb=384,
                      compute_class="tpu-v5e-2x4", tpu_topology="2x4"),
        ),
        memory_bandwidth_gbps=819,
        default_gpu_memory_utilization=0.9,
        default_max_num_batched_tokens=2048,
        interconnect="ICI",
    ),
    Accelerator(
        name="tpu-v6e-slice",
        short_name="v6e",
        kind="tpu",
        description="Cloud TPU v6e Trillium (32 GB HBM per chip, ct6e machines)",
        memory_gb=32,
        usable_memory_gib=32.0,
        resource_name="google.com/tpu",
        node_label=_TPU_LABEL,
        node_label_value="tpu-v6e-slice",
        shapes=(
            NodeShape(accelerators=1, machine_type="ct6e-standard-1t", vcpus=44, memory_gb=448,
                      compute_class="tpu-v6e-1x1", tpu_topology="1x1"),
            NodeShape(accelerators=4, machine_type="ct6e-standard-4t", vcpus=180, memory_gb=720,
                      compute_class="tpu-v6e-2x2", tpu_topology="2x2"),
            NodeShape(accelerators=8, machine_type="ct6e-standard-8t", vcpus=180, memory_gb=1440,
                      compute_class="tpu-v6e-2x4", tpu_topology="2x4"),
        ),
        memory_bandwidth_gbps=1640,
        default_gpu_memory_utilization=0.95,
        default_max_num_batched_tokens=2048,
        interconnect="ICI",
    ),
)


def _norm(text: str) -> str:
    return text.strip().lower()


def get_model(ref: str) -> ModelSpec:
    """The catalog model named ``ref`` (served name, hub id or alias, any case)."""
    key = _norm(ref)
    for model in MODELS:
        if key in (model.name, _norm(model.hf_id), *model.aliases):
            return model
    valid = ", ".join(m.name for m in MODELS)
    raise ModelNotFoundError(f"model '{ref}' is not in the catalog; valid: {valid}")


def get_accelerator(ref: str) -> Accelerator:
    """The accelerator named ``ref`` (GKE name such as nvidia-h100-80gb, or short name h100)."""
    key = _norm(ref)
    for acc in ACCELERATORS:
        if key in (acc.name, acc.short_name):
            return acc
    valid = ", ".join(f"{a.short_name} ({a.name})" for a in ACCELERATORS)
    raise ConfigError(f"accelerator '{ref}' is not in the catalog; valid: {valid}")


# --- the reference architecture's published configurations ------------------------------------


class ReferencePair(_Frozen):
    """What the reference architecture deploys for one model x accelerator pair."""

    model: str
    accelerator: str = Field(description="Short accelerator name.")
    gpus: int = Field(description="Accelerators requested by the pod.")
    tensor_parallel_size: int
    max_model_len: int
    gpu_memory_utilization: float
    compute_class: str


REFERENCE_SOURCE = (
    "GoogleCloudPlatform/accelerated-platforms @ 9320f3b27aa0998e9607829ad6e9695d3514a8ef: "
    "platforms/gke/base/use-cases/inference-ref-arch/kubernetes-manifests/online-inference-{gpu,tpu}/"
    "vllm/<accelerator>-<model>/{runtime.env,patch-resources.yaml,patch-nodeselector.yaml}; "
    "support matrix in docs/platforms/gke/base/use-cases/inference-ref-arch/online-inference-gpu/"
    "vllm-with-hf-model.md"
)


def _ref(model: str, acc: str, tp: int, mml: int, util: float, cc: str) -> ReferencePair:
    return ReferencePair(
        model=model, accelerator=acc, gpus=tp, tensor_parallel_size=tp, max_model_len=mml,
        gpu_memory_utilization=util, compute_class=cc,
    )


REFERENCE_TABLE: tuple[ReferencePair, ...] = (
    _ref("gemma-3-1b-it", "l4", 1, 1024, 0.89, "gpu-l4-24gb-s8-x1"),
    _ref("gemma-3-4b-it", "l4", 1, 2048, 0.89, "gpu-l4-24gb-s8-x1"),
    _ref("gemma-3-27b-it", "l4", 8, 131072, 0.80, "gpu-l4-24gb-x8"),
    _ref("gemma-3-27b-it", "h100", 1, 131072, 0.92, "gpu-h100-80gb-high-x1"),
    _ref("gemma-3-27b-it", "h200", 1, 131072, 0.95, "gpu-h200-141gb-ultra-x8"),
    _ref("gemma-3-27b-it", "rtx-pro-6000", 1, 51200, 0.92, "gpu-rtx-pro-6000-96gb-x1"),
    _ref("gpt-oss-20b", "l4", 8, 131072, 0.80, "gpu-l4-24gb-x8"),
    _ref("gpt-oss-20b", "h100", 1, 32768, 0.95, "gpu-h100-80gb-high-x1"),
    _ref("gpt-oss-20b", "h200", 1, 131072, 0.95, "gpu-h200-141gb-ultra-x8"),
    _ref("gpt-oss-20b", "rtx-pro-6000", 1, 67584, 0.95, "gpu-rtx-pro-6000-96gb-x1"),
    _ref("llama-3.3-70b-instruct", "h100", 4, 131072, 0.95, "gpu-h100-80gb-high-x4"),
    _ref("llama-3.3-70b-instruct", "h200", 4, 131072, 0.95, "gpu-h200-141gb-ultra-x8"),
    _ref("llama-3.3-70b-instruct", "rtx-pro-6000", 2, 48128, 0.95, "gpu-rtx-pro-6000-96gb-x2"),
    _ref("llama-4-scout-17b-16e-instruct", "h100", 8, 1000000, 0.95, "gpu-h100-80gb-high-x8"),
    _ref("llama-4-scout-17b-16e-instruct", "h200", 8, 3600000, 0.95, "gpu-h200-141gb-ultra-x8"),
    _ref("llama-4-scout-17b-16e-instruct", "rtx-pro-6000", 1, 77824, 0.95, "gpu-rtx-pro-6000-96gb-x1"),
    _ref("qwen3-32b", "l4", 8, 32768, 0.80, "gpu-l4-24gb-x8"),
    _ref("qwen3-32b", "h100", 1, 32768, 0.95, "gpu-h100-80gb-high-x1"),
    _ref("qwen3-32b", "h200", 1, 32768, 0.95, "gpu-h200-141gb-ultra-x8"),
    _ref("qwen3-32b", "rtx-pro-6000", 1, 32768, 0.95, "gpu-rtx-pro-6000-96gb-x1"),
    _ref("gemma-3-1b-it", "v5e", 1, 1024, 0.90, "tpu-v5e-1x1"),
    _ref("gemma-3-4b-it", "v5e", 4, 1024, 0.90, "tpu-v5e-2x2"),
    _ref("gemma-3-27b-it", "v5e", 8, 1024, 0.90, "tpu-v5e-2x4"),
    _ref("qwen3-32b", "v5e", 8, 32768, 0.95, "tpu-v5e-2x4"),
    _ref("gemma-3-27b-it", "v6e", 8, 16384, 0.95, "tpu-v6e-2x4"),
    _ref("qwen3-32b", "v6e", 4, 32768, 0.95, "tpu-v6e-2x2"),
)

# Pairs the reference architecture's GPU support matrix marks with a cross. For the two Llama
# models on L4 that means "does not fit usefully"; for the small Gemma models on the large GPUs it
# means "no manifest shipped" (a 1B model does not need an H100), not "does not fit".
REFERENCE_UNSUPPORTED: tuple[tuple[str, str], ...] = (
    ("llama-3.3-70b-instruct", "l4"),
    ("llama-4-scout-17b-16e-instruct", "l4"),
    ("gemma-3-1b-it", "h100"),
    ("gemma-3-1b-it", "h200"),
    ("gemma-3-1b-it", "rtx-pro-6000"),
    ("gemma-3-4b-it", "h100"),
    ("gemma-3-4b-it", "h200"),
    ("gemma-3-4b-it", "rtx-pro-6000"),
)


def find_reference(model: str, accelerator: str) -> ReferencePair | None:
    for pair in REFERENCE_TABLE:
        if pair.model == model and pair.accelerator == accelerator:
            return pair
    return None
