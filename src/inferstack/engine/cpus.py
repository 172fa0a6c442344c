"""Which CPU cores each replica is pinned to.

With N replicas on C cores: when N <= C every replica gets its own contiguous block of C // N
cores (or ``cores_per_replica`` when set); when N > C replicas share cores round-robin, one each.
Pinning keeps two replicas from fighting over the same cores' caches and OpenMP threads.
"""

from __future__ import annotations

import os

__all__ = ["available_cores", "plan_core_sets"]


def available_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def plan_core_sets(replicas: int, cores: list[int], per_replica: int | None = None) -> list[list[int]]:
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if not cores:
        return [[] for _ in range(replicas)]
    if replicas > len(cores):
        return [[cores[i % len(cores)]] for i in range(replicas)]
    size = per_replica or len(cores) // replicas
    size = max(1, min(size, len(cores) // replicas))
    return [cores[i * size:(i + 1) * size] for i in range(replicas)]
