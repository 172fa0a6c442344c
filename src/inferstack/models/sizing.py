"""Sizing: how many accelerators, which tensor/pipeline parallelism, what context and batch fit.

The arithmetic, per device (GPU or TPU chip), for ``T`` = tensor-parallel size and ``P`` =
pipeline-parallel size (= nodes):

    usable      = device memory x gpu_memory_utilization            (vLLM's budget)
    weights     = parameters x bytes/parameter / (T x P)            (+ an EAGLE head, if any)
    activations = max_num_batched_tokens x (10 x hidden + 3 x mlp_width / T) x 2 bytes
                  + max_num_seqs x vocab x 4 bytes                  (peak of vLLM's profile run)
    runtime     = 1.0 GiB (CUDA context, workspaces, graphs) + 0.5 GiB when T x P > 1 (NCCL)
    kv_free     = usable - weights - activations - runtime
    kv(L)       = 2 (K and V) x ceil(kv_heads / T) x head_dim x 2 bytes
                  x (full_layers / P x L + local_layers / P x min(L, window))

Sliding-window layers (Gemma 3, gpt-oss) cost only their window on GPUs, because vLLM's hybrid
KV cache manager frees what falls out of it. Chunked-local layers (Llama 4) and every layer on
TPU are budgeted at full length: we do not count on savings the runtime may not make.

The choice (``recommend``):

1. the context target is the model's native context, capped at ``context_cap_tokens`` (128k),
   or the ``--max-model-len`` the user asks for;
2. a device count qualifies if a single target-length sequence fits in ``kv_free`` and a
   decode step (active weights / (T x memory bandwidth)) allows ``min_decode_tokens_per_s``;
3. the fewest devices that qualify win; if none holds the target, the fewest that hold at least
   ``min_context_tokens`` win, with the longest context that fits; otherwise it does not fit.

Tensor-parallel sizes are powers of two up to the accelerator's largest machine, must divide the
attention heads, and for TPUs equal a slice's chip count (a TPU pod takes the whole host).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from inferstack.errors import ConfigError
from inferstack.models.catalog import GIB, Accelerator, ModelSpec, NodeShape

__all__ = [
    "Candidate",
    "DoesNotFitError",
    "Plan",
    "SizingPolicy",
    "draft_head_parameters",
    "recommend",
]

_KV_BYTES = 2  # bf16 KV cache
_ACT_BYTES = 2
_LOGIT_BYTES = 4
_SPEC_METHODS = ("none", "ngram", "eagle", "eagle3")


class DoesNotFitError(ConfigError):
    """The model cannot be served usefully on the accelerator; the message shows the arithmetic."""


class SizingPolicy(BaseModel):
    """The knobs of the sizing rule; the defaults are what ``inferstack recommend`` uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context_cap_tokens: int = Field(
        131072, ge=1024, description="Target context = the model's native context, capped here."
    )
    min_context_tokens: int = Field(
        32768,
        ge=256,
        description="A plan that cannot hold the target must hold at least this context (or the "
        "model's native context if shorter) to count as useful.",
    )
    min_decode_tokens_per_s: float = Field(
        20.0,
        gt=0,
        description="Interactive floor: estimated single-sequence decode speed (active weights "
        "read once per token at the device's memory bandwidth) must reach this.",
    )
    typical_request_tokens: int = Field(
        2048, ge=1, description="Prompt + output of a typical request; sets max-num-seqs."
    )
    max_num_seqs_cap: int = Field(256, ge=1, description="Upper bound on max-num-seqs.")
    runtime_overhead_gib: float = Field(
        1.0, ge=0, description="Per device: CUDA/XLA context, workspaces, CUDA graphs."
    )
    multi_device_overhead_gib: float = Field(
        0.5, ge=0, description="Per device, extra when the replica spans devices (NCCL buffers)."
    )


def draft_head_parameters(model: ModelSpec, method: str) -> float:
    """Estimated parameter count of an EAGLE head for ``model`` (it is one decoder layer).

    EAGLE: one layer reading [embedding, hidden] (2h wide) + an fc 2h->h; it shares the target's
    embeddings and LM head. EAGLE-3: one layer with 2h-wide attention input, an fc fusing three
    hidden states (3h->h) and its own LM head over a 32k draft vocabulary. An estimate: the
    published heads are within a few tens of percent of it.
    """
    h = model.hidden_size
    q = model.num_attention_heads * model.head_dim
    kv = model.num_kv_heads * model.head_dim
    mlp = 3 * h * model.mlp_active_width
    if method == "eagle":
        return float(2 * h * (q + 2 * kv) + q * h + mlp + 2 * h * h)
    if method == "eagle3":
        return float(2 * h * (q + 2 * kv) + q * h + mlp + 3 * h * h + 32000 * h)
    return 0.0


@dataclass(frozen=True)
class Candidate:
    """One device count considered, with its per-device memory breakdown (bytes)."""

    devices_per_node: int
    nodes: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    usable: float
    weights: float
    draft: float
    activations: float
    runtime: float
    kv_per_token_layer: float  # bytes per token per layer on one device
    full_layers: int  # per pipeline stage, + the draft layer
    local_layers: int  # per pipeline stage, windowed
    window: int | None
    decode_tokens_per_s: float
    target_len: int
    native_len: int
    verdict: str = ""
    qualifies: bool = False
    holds_target: bool = False

    @property
    def devices(self) -> int:
        return self.devices_per_node * self.nodes

    @property
    def kv_free(self) -> float:
        return self.usable - self.weights - self.draft - self.activations - self.runtime

    def kv_bytes(self, length: int) -> float:
        """KV bytes on one device for one sequence of ``length`` tokens."""
        local = 0 if self.window is None else self.local_layers * min(length, self.window)
        return self.kv_per_token_layer * (self.full_layers * length + local)

    def longest_context(self) -> int:
        """Longest single sequence whose KV fits in ``kv_free`` (capped at the native context)."""
        free = self.kv_free
        if free <= 0 or self.kv_bytes(1) > free:
            return 0
        lo, hi = 1, self.native_len
        if self.kv_bytes(hi) <= free:
            return hi
        while lo < hi:  # kv_bytes is monotonic in length
            mid = (lo + hi + 1) // 2
            if self.kv_bytes(mid) <= free:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def concurrent(self, length: int) -> int:
        need = self.kv_bytes(length)
        return int(self.kv_free // need) if need > 0 and self.kv_free > 0 else 0


@dataclass(frozen=True)
class Plan:
    """The recommendation: what to deploy, and every candidate with the reason it won or lost."""

    model: ModelSpec
    accelerator: Accelerator
    policy: SizingPolicy
    spec_method: str
    gpu_memory_utilization: float
    chosen: Candidate
    shape: NodeShape
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    candidates: tuple[Candidate, ...] = field(default_factory=tuple)

    @property
    def tensor_parallel_size(self) -> int:
        return self.chosen.tensor_parallel_size

    @property
    def pipeline_parallel_size(self) -> int:
        return self.chosen.pipeline_parallel_size

    @property
    def devices_per_node(self) -> int:
        return self.chosen.devices_per_node

    @property
    def nodes(self) -> int:
        return self.chosen.nodes

    @property
    def devices(self) -> int:
        return self.chosen.devices

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens of full-length KV the cache holds across sequences (vLLM's 'KV cache size')."""
        per_token = self.chosen.kv_bytes(self.max_model_len) / self.max_model_len
        return int(self.chosen.kv_free // per_token) if per_token > 0 else 0

    def vllm_args(self) -> list[str]:
        """The sizing flags for vLLM, in the order the renderer passes them."""
        args = [
            f"--tensor-parallel-size={self.tensor_parallel_size}",
            f"--max-model-len={self.max_model_len}",
            f"--max-num-seqs={self.max_num_seqs}",
            f"--max-num-batched-tokens={self.max_num_batched_tokens}",
            f"--gpu-memory-utilization={self.gpu_memory_utilization}",
        ]
        if self.pipeline_parallel_size > 1:
            args.insert(1, f"--pipeline-parallel-size={self.pipeline_parallel_size}")
        return args

    def explain(self) -> list[str]:
        """The arithmetic, as lines for a terminal (the last lines are the result)."""
        lines = _header(self.model, self.accelerator, self.gpu_memory_utilization, self.spec_method)
        lines.append("candidates (per device):")
        lines.extend("  " + c.verdict for c in self.candidates)
        unit = "GPU" if self.accelerator.kind == "gpu" else "TPU chip"
        c = self.chosen
        typical = min(self.policy.typical_request_tokens, self.max_model_len)
        lines += [
            "result:",
            f"{unit}s per node: {c.devices_per_node} x {c.nodes} node(s) = {c.devices} "
            f"(machine {self.shape.machine_type}, compute class {self.shape.compute_class})",
            f"tensor-parallel-size: {c.tensor_parallel_size}",
            f"pipeline-parallel-size: {c.pipeline_parallel_size}",
            f"max-model-len: {self.max_model_len}",
            f"max-num-seqs: {self.max_num_seqs}",
            f"max-num-batched-tokens: {self.max_num_batched_tokens}",
            f"gpu-memory-utilization: {self.gpu_memory_utilization}",
            f"kv-cache: {_gib(c.kv_free)} per device = {self.kv_cache_tokens:,} tokens at full length; "
            f"{c.concurrent(typical)} concurrent {typical}-token requests "
            f"(max-num-seqs capped at {self.policy.max_num_seqs_cap})",
        ]
        return lines


def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB"


def _header(model: ModelSpec, acc: Accelerator, util: float, spec: str) -> list[str]:
    kv_token = 2 * model.num_kv_heads * model.head_dim * _KV_BYTES
    layers = f"{model.num_layers} layers"
    if model.local_attention_window and model.layers_local:
        layers = (
            f"{model.layers_full} full-attention layers (+{model.layers_local} {model.local_attention_kind} "
            f"layers of {model.local_attention_window} tokens)"
        )
    lines = [
        f"model: {model.name} ({model.hf_id}): {model.parameters_b:g}B parameters, "
        f"{model.weight_dtype} -> {model.weight_bytes / 1e9:.1f} GB ({_gib(model.weight_bytes)}) of weights",
        f"  KV per token per layer: 2 (K,V) x {model.num_kv_heads} KV heads x {model.head_dim} dims "
        f"x {_KV_BYTES} bytes = {kv_token / 1024:.1f} KiB; {layers}; native context {model.max_context:,}",
        f"accelerator: {acc.name}: {acc.usable_memory_gib} GiB each x gpu-memory-utilization {util} "
        f"= {acc.usable_memory_gib * util:.1f} GiB usable per device; {acc.memory_bandwidth_gbps:g} GB/s",
    ]
    if spec in ("eagle", "eagle3"):
        head = model.draft_head(spec)
        lines.append(
            f"speculative decoding: {spec} head {head.hf_id if head else '?'}: ~"
            f"{draft_head_parameters(model, spec) / 1e9:.2f}B parameters (estimate), +1 KV layer"
        )
    return lines


def _tp_options(model: ModelSpec, acc: Accelerator) -> list[int]:
    if acc.kind == "tpu":
        counts = [s.accelerators for s in acc.shapes]
    else:
        counts = [n for n in (1, 2, 4, 8, 16) if n <= acc.max_per_node]
    return counts


def _tp_problem(model: ModelSpec, tp: int) -> str | None:
    if model.num_attention_heads % tp:
        return f"{model.num_attention_heads} attention heads are not divisible by {tp}"
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        return f"{model.num_kv_heads} KV heads and tensor-parallel {tp} do not divide each other"
    return None


def _candidate(
    model: ModelSpec,
    acc: Accelerator,
    *,
    tp: int,
    nodes: int,
    util: float,
    spec: str,
    batched_tokens: int,
    target_len: int,
    policy: SizingPolicy,
) -> Candidate:
    devices = tp * nodes
    usable = acc.usable_memory_gib * GIB * util
    weights = model.weight_bytes / devices
    draft_params = draft_head_parameters(model, spec)
    draft = draft_params * 2 / tp  # bf16 head, sharded like the target
    activations = batched_tokens * (10 * model.hidden_size + 3 * model.mlp_active_width / tp) * _ACT_BYTES
    activations += policy.max_num_seqs_cap * model.vocab_size * _LOGIT_BYTES
    runtime = (policy.runtime_overhead_gib + (policy.multi_device_overhead_gib if devices > 1 else 0)) * GIB
    kv_heads = math.ceil(model.num_kv_heads / tp)
    per_layer = 2 * kv_heads * model.head_dim * _KV_BYTES
    windowed = model.local_attention_kind == "sliding" and acc.kind == "gpu"
    full = model.layers_full if windowed else model.num_layers
    local = model.layers_local if windowed else 0
    full_stage = math.ceil(full / nodes) + (1 if spec in ("eagle", "eagle3") else 0)
    local_stage = math.ceil(local / nodes)
    step_s = model.active_weight_bytes / (tp * acc.memory_bandwidth_gbps * 1e9)
    return Candidate(
        devices_per_node=tp,
        nodes=nodes,
        tensor_parallel_size=tp,
        pipeline_parallel_size=nodes,
        usable=usable,
        weights=weights,
        draft=draft,
        activations=activations,
        runtime=runtime,
        kv_per_token_layer=per_layer,
        full_layers=full_stage,
        local_layers=local_stage,
        window=model.local_attention_window if windowed else None,
        decode_tokens_per_s=1.0 / step_s,
        target_len=target_len,
        native_len=model.max_context,
    )


def _judge(c: Candidate, floor: int, policy: SizingPolicy) -> Candidate:
    n = f"{c.devices_per_node} x {c.nodes} nodes" if c.nodes > 1 else f"{c.devices_per_node}"
    budget = (
        f"{_gib(c.usable)} usable - {_gib(c.weights + c.draft)} weights - {_gib(c.activations)} "
        f"activations - {_gib(c.runtime)} runtime"
    )
    speed = f"~{c.decode_tokens_per_s:.0f} tok/s decode"
    if c.kv_free <= 0:
        verdict = f"{n}: {budget} = {_gib(c.kv_free)} -> the weights do not fit"
        return _replace(c, verdict=verdict)
    longest = c.longest_context()
    head = f"{n}: {budget} = {_gib(c.kv_free)} KV -> longest context {longest:,}"
    if c.decode_tokens_per_s < policy.min_decode_tokens_per_s:
        verdict = (
            f"{head}; {speed} < {policy.min_decode_tokens_per_s:g} tok/s interactive floor "
            f"(each token reads {_gib(c.weights * c.nodes)} of weights per device) -> too slow"
        )
        return _replace(c, verdict=verdict)
    if longest >= c.target_len:
        verdict = f"{head} >= target {c.target_len:,}; {speed} -> holds the target"
        return _replace(c, verdict=verdict, qualifies=True, holds_target=True)
    if longest >= floor:
        verdict = f"{head} < target {c.target_len:,} but >= floor {floor:,}; {speed} -> usable"
        return _replace(c, verdict=verdict, qualifies=True)
    verdict = f"{head} < floor {floor:,} -> context too short"
    return _replace(c, verdict=verdict)


def _replace(c: Candidate, **changes: object) -> Candidate:
    return dataclasses.replace(c, **changes)  # type: ignore[arg-type]


def recommend(
    model: ModelSpec,
    accelerator: Accelerator,
    *,
    gpus: int | None = None,
    nodes: int = 1,
    gpu_memory_utilization: float | None = None,
    max_model_len: int | None = None,
    spec_method: str = "none",
    policy: SizingPolicy | None = None,
) -> Plan:
    """Size ``model`` on ``accelerator``; raise DoesNotFitError (with the arithmetic) if it cannot.

    ``gpus`` fixes the devices per node (= tensor-parallel size); ``nodes`` > 1 adds pipeline
    stages, one per node (then the default is a full node per stage).
    """
    policy = policy or SizingPolicy()
    if spec_method not in _SPEC_METHODS:
        raise ConfigError(f"spec method '{spec_method}' is not valid; valid: {', '.join(_SPEC_METHODS)}")
    if spec_method in ("eagle", "eagle3") and model.draft_head(spec_method) is None:
        raise ConfigError(
            f"no published {spec_method} head is known for {model.name}; "
            f"use --spec ngram{', or --spec eagle3' if model.eagle3 else ''}"
            f"{', or --spec eagle' if model.eagle else ''}"
        )
    if nodes < 1:
        raise ConfigError(f"--nodes has value {nodes}; must be >= 1")
    if nodes > model.num_layers:
        raise ConfigError(f"--nodes has value {nodes}; {model.name} has only {model.num_layers} layers")
    util = gpu_memory_utilization or accelerator.default_gpu_memory_utilization
    if not 0 < util <= 1:
        raise ConfigError(f"gpu-memory-utilization has value {util}; must be in (0, 1]")
    options = _tp_options(model, accelerator)
    if gpus is not None:
        if gpus not in options:
            unit = "chips (a TPU slice)" if accelerator.kind == "tpu" else "GPUs"
            raise ConfigError(
                f"--gpus has value {gpus}; {accelerator.short_name} offers {unit} per node: "
                f"{', '.join(map(str, options))}"
            )
        options = [gpus]
    elif nodes > 1:
        options = [options[-1]]
    target = min(model.max_context, policy.context_cap_tokens)
    if max_model_len is not None:
        if not 1 <= max_model_len <= model.max_context:
            raise ConfigError(
                f"--max-model-len has value {max_model_len}; must be in 1..{model.max_context} "
                f"({model.name}'s native context)"
            )
        target = max_model_len
    floor = target if max_model_len is not None else min(policy.min_context_tokens, target)
    batched = accelerator.default_max_num_batched_tokens

    judged: list[Candidate] = []
    for tp in options:
        problem = _tp_problem(model, tp)
        if problem:
            c = _candidate(model, accelerator, tp=tp, nodes=nodes, util=util, spec=spec_method,
                           batched_tokens=batched, target_len=target, policy=policy)
            judged.append(_replace(c, verdict=f"{tp}: {problem} -> not a valid tensor-parallel size"))
            continue
        c = _candidate(model, accelerator, tp=tp, nodes=nodes, util=util, spec=spec_method,
                       batched_tokens=batched, target_len=target, policy=policy)
        judged.append(_judge(c, floor, policy))

    chosen = next((c for c in judged if c.holds_target), None)
    if chosen is None:
        chosen = next((c for c in judged if c.qualifies), None)
    if chosen is None:
        lines = _header(model, accelerator, util, spec_method)
        lines.append("candidates (per device):")
        lines.extend("  " + c.verdict for c in judged)
        where = f"{nodes} node(s) of " if nodes > 1 else ""
        raise DoesNotFitError(
            f"{model.name} does not fit on {where}{accelerator.short_name} "
            f"({'--gpus ' + str(gpus) if gpus else 'any machine shape'}):\n" + "\n".join(lines)
        )
    index = judged.index(chosen)
    chosen = _replace(chosen, verdict=chosen.verdict + "  <== chosen")
    verdicts = [*judged[:index], chosen, *judged[index + 1:]]
    mml = min(target, chosen.longest_context())
    if mml > 1024:
        mml -= mml % 256  # round like vLLM block sizes; never above what fits
    typical = min(policy.typical_request_tokens, mml)
    seqs = max(1, min(policy.max_num_seqs_cap, chosen.concurrent(typical)))
    if seqs >= 8:
        seqs -= seqs % 8
    shape = accelerator.shape_for(chosen.devices_per_node)
    assert shape is not None  # options come from the shapes
    return Plan(
        model=model,
        accelerator=accelerator,
        policy=policy,
        spec_method=spec_method,
        gpu_memory_utilization=util,
        chosen=chosen,
        shape=shape,
        max_model_len=mml,
        max_num_seqs=seqs,
        max_num_batched_tokens=max(batched, seqs),
        candidates=tuple(verdicts),
    )
