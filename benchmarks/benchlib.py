"""What the stack benchmarks share (each is a script run as ``python benchmarks/X.py``, so this
folder is on its import path): the CLI called as a user would, and the nearest-rank quantile."""

from __future__ import annotations

import subprocess
import sys

__all__ = ["inferstack", "quantile"]


def inferstack(env: dict[str, str], *args: str) -> str:
    """``inferstack ARGS`` with ``env`` (a private INFERSTACK_STATE); its stdout, RuntimeError with
    both outputs when it fails."""
    proc = subprocess.run([sys.executable, "-m", "inferstack", *args], env=env, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"inferstack {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def quantile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0..1) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
