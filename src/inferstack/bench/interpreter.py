"""Where the benchmark environment's interpreter lives.

inference-perf needs Python >= 3.12 and heavy dependencies, so it lives in its own virtualenv
under the user cache, keyed by its pinned version. Invariant: this is the only place that knows
the path; everything else asks :func:`bench_python`.
"""

from __future__ import annotations

from pathlib import Path

from inferstack.errors import SetupError
from inferstack.paths import envs_dir

__all__ = ["INFERENCE_PERF_VERSION", "bench_env_dir", "bench_python"]

INFERENCE_PERF_VERSION = "0.7.0"


def bench_env_dir() -> Path:
    """The benchmark virtualenv (created by ``make setup`` / ``inferstack setup``)."""
    return envs_dir() / f"bench-inference-perf-{INFERENCE_PERF_VERSION}"


def bench_python() -> Path:
    """The benchmark interpreter; :class:`SetupError` naming the path when it is missing."""
    python = bench_env_dir() / "bin" / "python"
    if not python.exists():
        raise SetupError(
            f"the benchmark interpreter {python} does not exist (inference-perf "
            f"{INFERENCE_PERF_VERSION} environment missing); run `make setup` to create it"
        )
    return python
