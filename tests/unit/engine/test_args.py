from pathlib import Path

import pydantic
import pytest

from inferstack.engine.args import build_replica_argv, build_replica_env
from inferstack.engine.settings import EngineSettings
from inferstack.engine.speculative import SpeculativeSettings
from inferstack.lora import LoraSettings
from inferstack.models.resolve import ResolvedModel

PY = Path("/envs/engine/bin/python")
MODEL = ResolvedModel("/models/smol", "smollm2-135m-instruct", "bundled")


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_argv_runs_the_api_server_module_with_model_and_port():
    argv = build_replica_argv(PY, MODEL, 8105, EngineSettings(), SpeculativeSettings(method="none"))
    assert argv[:3] == [str(PY), "-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(argv, "--model") == "/models/smol"
    assert _flag(argv, "--served-model-name") == "smollm2-135m-instruct"
    assert _flag(argv, "--port") == "8105"
    assert _flag(argv, "--host") == "127.0.0.1"
    assert _flag(argv, "--max-model-len") == "2048"
    assert "--enforce-eager" in argv
    assert "--speculative-config" not in argv


def test_argv_compiled_mode_and_speculation_and_extras():
    engine = EngineSettings(enforce_eager=False, max_num_seqs=8, extra_args=["--seed", "7"])
    argv = build_replica_argv(PY, MODEL, 8101, engine, SpeculativeSettings(method="ngram"))
    assert "--enforce-eager" not in argv
    assert _flag(argv, "--max-num-seqs") == "8"
    assert '"method":"ngram"' in _flag(argv, "--speculative-config")
    assert argv[-2:] == ["--seed", "7"]


def test_gpu_only_flags_are_not_passed_to_vllm_cpu():
    cpu = EngineSettings(gpu_memory_utilization=0.9)
    gpu = EngineSettings(engine="vllm", gpu_memory_utilization=0.9, tensor_parallel_size=4)
    assert "--gpu-memory-utilization" not in build_replica_argv(PY, MODEL, 1, cpu, SpeculativeSettings())
    argv = build_replica_argv(PY, MODEL, 1, gpu, SpeculativeSettings())
    assert _flag(argv, "--gpu-memory-utilization") == "0.9"
    assert _flag(argv, "--tensor-parallel-size") == "4"


def test_env_sets_kv_cache_and_core_binding(tmp_path):
    py = tmp_path / "bin" / "python"
    py.parent.mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libiomp5.so").write_bytes(b"")
    env = build_replica_env(EngineSettings(kv_cache_gib=3), [2, 3], py, base_env={"PATH": "/bin"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "2,3"
    assert env["LD_PRELOAD"].split(":")[0] == str(tmp_path / "lib" / "libiomp5.so")
    assert env["PATH"] == "/bin"
    # the n-gram proposer's numba kernel off OpenMP (it slowed torch's OpenMP threads by ~1/3)
    assert env["NUMBA_THREADING_LAYER"] == "workqueue"
    mine = build_replica_env(EngineSettings(), [0], py, base_env={"NUMBA_THREADING_LAYER": "tbb"})
    assert mine["NUMBA_THREADING_LAYER"] == "tbb"  # a user's own choice stands
    # idle connections outlive the clients' pools (aiohttp keeps them 15 s), unless the user says otherwise
    assert env["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"] == "75"
    assert build_replica_env(EngineSettings(), [0], py, base_env={"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "9"})[
        "VLLM_HTTP_TIMEOUT_KEEP_ALIVE"] == "9"


def test_env_on_gpu_engine_has_no_cpu_settings():
    env = build_replica_env(EngineSettings(engine="vllm"), [0], PY, base_env={})
    assert "VLLM_CPU_KVCACHE_SPACE" not in env
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env
    assert "NUMBA_THREADING_LAYER" not in env


def test_lora_flags_come_before_the_extras_and_name_the_served_model_as_parent():
    engine = EngineSettings(extra_args=["--seed", "7"])
    lora = LoraSettings(enabled=True, max_loras=2, adapters={"sql": "org/sql-lora"})
    argv = build_replica_argv(PY, MODEL, 8101, engine, SpeculativeSettings(), lora)
    assert _flag(argv, "--max-loras") == "2"
    assert '"base_model_name":"smollm2-135m-instruct"' in _flag(argv, "--lora-modules")
    assert argv[-2:] == ["--seed", "7"]
    assert "--enable-lora" not in build_replica_argv(PY, MODEL, 8101, engine, SpeculativeSettings(), LoraSettings())


def test_env_opens_the_runtime_adapter_api_only_with_lora():
    on = build_replica_env(EngineSettings(), None, PY, base_env={}, lora=LoraSettings(enabled=True))
    assert on["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in build_replica_env(EngineSettings(), None, PY, base_env={},
                                                                       lora=LoraSettings())


def test_default_dtype_is_float32_on_cpu_and_auto_on_gpu_and_a_set_one_is_kept():
    def dtype_of(engine: EngineSettings) -> str:
        argv = build_replica_argv(Path("/py"), MODEL, 8000, engine, SpeculativeSettings())
        return argv[argv.index("--dtype") + 1]

    assert dtype_of(EngineSettings()) == "float32"
    assert "bf16 flips greedy answers" in EngineSettings().dtype_reason
    assert dtype_of(EngineSettings(engine="vllm")) == "auto"
    assert dtype_of(EngineSettings(dtype="bfloat16")) == "bfloat16"
    assert EngineSettings(dtype="bfloat16").dtype_reason == "set in the config"


def test_a_one_core_vllm_cpu_replica_runs_its_model_in_the_engine_core_process():
    one_core = build_replica_env(EngineSettings(), [1], PY, base_env={})
    # without it vLLM-CPU swaps uni, its default for one rank, for mp (a worker process beside it)
    assert one_core["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert "--distributed-executor-backend" not in build_replica_argv(PY, MODEL, 1, EngineSettings(), SpeculativeSettings())
    # more cores (uni measured 0.54x tok/s under load on 2), unpinned, tensor parallel, GPU: vLLM's choice
    for engine, cores in ((EngineSettings(), [0, 1]), (EngineSettings(), None),
                          (EngineSettings(tensor_parallel_size=2), [0]), (EngineSettings(engine="vllm"), [0])):
        assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in build_replica_env(engine, cores, PY, base_env={})


def test_an_explicit_executor_is_passed_on_and_wins_over_the_core_count():
    mp, uni = EngineSettings(executor="mp"), EngineSettings(executor="uni")
    assert _flag(build_replica_argv(PY, MODEL, 1, mp, SpeculativeSettings()), "--distributed-executor-backend") == "mp"
    assert _flag(build_replica_argv(PY, MODEL, 1, uni, SpeculativeSettings()), "--distributed-executor-backend") == "uni"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in build_replica_env(mp, [0], PY, base_env={})
    assert build_replica_env(uni, [0, 1], PY, base_env={})["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_one_worker_in_process_cannot_hold_several_tensor_parallel_ranks():
    with pytest.raises(pydantic.ValidationError, match="executor 'uni' runs one worker, but tensor_parallel_size is 2"):
        EngineSettings(executor="uni", tensor_parallel_size=2)
