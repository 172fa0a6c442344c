"""The reconcile decision, pure: what to do to move the replicas toward the desired count and
config generation. The supervisor's loop calls ``plan`` with what it sees and carries the steps
out (start a replica, drain and stop one); tests call it with made-up members, no processes.

Rules (the supervisor's module docstring tells the story):
- fewer members than desired: add replicas of the current generation;
- more than desired: retire, not-ready and old-generation ones first, never a ready one while
  fewer than ``desired`` others are ready, never the surge replica of a rolling restart;
- as many as desired but some of an old generation (a rolling reconfigure): once every new one is
  ready and nothing is retiring, surge one replica of the new generation (then the excess rule
  retires an old one once the surge is ready).
Members already retiring count for nothing but "a rolling step is in progress".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Add", "MemberView", "Retire", "Step", "plan"]


@dataclass(frozen=True)
class MemberView:
    slot: int
    generation: int
    ready: bool
    retiring: bool = False


@dataclass(frozen=True)
class Add:
    surge: bool = False  # the extra replica of a rolling restart (else: scale out)


@dataclass(frozen=True)
class Retire:
    slot: int
    why: str


Step = Add | Retire


def plan(members: Sequence[MemberView], desired: int, generation: int) -> list[Step]:
    active = [m for m in members if not m.retiring]
    new = [m for m in active if m.generation == generation]
    old = [m for m in active if m.generation != generation]
    excess = len(active) - desired
    if excess < 0:
        return [Add() for _ in range(-excess)]
    if excess > 0:
        steps: list[Step] = []
        ready = sum(m.ready for m in active)
        for m in sorted(active, key=lambda m: (m.generation == generation, m.ready, -m.slot)):
            if excess == 0:
                break
            if m.ready:
                if ready - 1 < desired:
                    continue  # it is serving and nothing ready replaces it yet
                ready -= 1
            elif old and m.generation == generation:
                continue  # the surge replica of a rolling restart: keep it
            steps.append(Retire(m.slot, "scale-in" if not old else f"rolling restart to generation {generation}"))
            excess -= 1
        return steps
    rolling = any(m.retiring for m in members)
    if old and not rolling and all(m.ready for m in new):
        return [Add(surge=True)]
    return []
