"""The scheduler framework: filters, weighted scorers and a picker, built once from YAML settings.

    Filter.filter(ctx, request, endpoints) -> endpoints      (never returns an empty list: the
                                                             framework keeps the input if it would)
    Scorer.score(ctx, request, endpoints) -> [float]         (one per endpoint; clamped to [0, 1])
    picker: max weighted score (random tie-break), or round-robin / random for comparison

Plugins register by name in ``FILTERS`` / ``SCORERS`` (a decorator), each with a strict pydantic
parameters model; unknown names or parameters are ``ConfigError`` before anything starts.
Invariants: the hot path does no I/O and builds no per-request state beyond the result; each pick
records itself (``Scorer.on_pick``, the endpoint's in-flight count); a per-plugin latency histogram
is kept by the caller through ``Scheduler.plugin_timings`` (cumulative seconds, count).
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass
from typing import ClassVar

import pydantic
from pydantic import BaseModel, ConfigDict

from inferstack.errors import ConfigError
from inferstack.gateway.datastore import Endpoint
from inferstack.gateway.request import InferenceRequest
from inferstack.gateway.settings import SaturationSettings, SchedulerSettings

__all__ = [
    "FILTERS",
    "SCORERS",
    "Filter",
    "NoParams",
    "PickResult",
    "Scheduler",
    "SchedContext",
    "Scorer",
    "register_filter",
    "register_scorer",
]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(slots=True)
class SchedContext:
    now: float
    staleness_s: float
    saturation: SaturationSettings


class Filter:
    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel) -> None:
        self.params = params

    def filter(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[Endpoint]:
        raise NotImplementedError


class Scorer:
    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    consumes: ClassVar[tuple[str, ...]] = ()  # endpoint metrics it reads (documentation + status)
    requires: ClassVar[tuple[str, ...]] = ()  # scorers that must be listed (and so run) before it ("a|b": either)

    def __init__(self, params: BaseModel, scheduler_settings: SchedulerSettings) -> None:
        self.params = params

    def score(self, ctx: SchedContext, request: InferenceRequest, endpoints: list[Endpoint]) -> list[float]:
        raise NotImplementedError

    def on_pick(self, ctx: SchedContext, request: InferenceRequest, endpoint: Endpoint) -> None:
        """Record the choice (e.g. the prefix index); default: nothing."""

    def forget(self, address: str) -> None:
        """Drop state of an endpoint that left; default: nothing."""


FILTERS: dict[str, type[Filter]] = {}
SCORERS: dict[str, type[Scorer]] = {}


def register_filter(cls: type[Filter]) -> type[Filter]:
    FILTERS[cls.name] = cls
    return cls


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    SCORERS[cls.name] = cls
    return cls


def _params(cls: type[Filter] | type[Scorer], raw: dict[str, object], where: str) -> BaseModel:
    try:
        return cls.Params.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where} ({cls.name}) has bad parameters {raw!r}: {problems}") from exc


@dataclass(slots=True)
class PickResult:
    endpoint: Endpoint
    fallbacks: list[Endpoint]
    scores: dict[str, float]


class Scheduler:
    """Filters -> weighted scorers -> picker over the ready endpoints."""

    def __init__(self, settings: SchedulerSettings, rng: random.Random | None = None) -> None:
        # Imported for their registration side effect; kept here so the framework owns the registry.
        from inferstack.gateway.plugins import filters as _f, scorers as _s  # noqa: F401
        from inferstack.gateway import prefix as _p  # noqa: F401

        self.settings = settings
        self._rng = rng or random.Random()
        self.filters: list[Filter] = []
        for i, name in enumerate(settings.filters):
            if name not in FILTERS:
                raise ConfigError(f"scheduler.filters[{i}] has value {name!r}; valid: {sorted(FILTERS)}")
            self.filters.append(FILTERS[name](_params(FILTERS[name], {}, f"scheduler.filters[{i}]")))
        self.scorers: list[tuple[Scorer, float]] = []
        if settings.picker == "max-score" and not settings.scorers:
            raise ConfigError("scheduler.scorers is empty; picker 'max-score' needs at least one scorer")
        for i, sc in enumerate(settings.scorers):
            if sc.type not in SCORERS:
                raise ConfigError(f"scheduler.scorers[{i}].type has value {sc.type!r}; valid: {sorted(SCORERS)}")
            cls = SCORERS[sc.type]
            before = [s.type for s in settings.scorers[:i]]
            for need in cls.requires:  # "a|b": either
                if not any(alternative in before for alternative in need.split("|")):
                    named = " or ".join(repr(a) for a in need.split("|"))
                    raise ConfigError(f"scheduler.scorers[{i}] ({sc.type}) needs scorer {named} listed before it; "
                                      f"got {[s.type for s in settings.scorers]}")
            self.scorers.append((cls(_params(cls, sc.parameters, f"scheduler.scorers[{i}]"), settings), sc.weight))
        self._rr = itertools.count()
        plugins: list[Filter | Scorer] = [*self.filters, *(s for s, _ in self.scorers)]
        self.plugin_timings: dict[str, list[float]] = {p.name: [0.0, 0] for p in plugins}

    def forget(self, address: str) -> None:
        for scorer, _ in self.scorers:
            scorer.forget(address)

    def schedule(self, ctx: SchedContext, request: InferenceRequest, ready: list[Endpoint]) -> PickResult | None:
        """Pick an endpoint and fallbacks among ``ready``; None when there is none."""
        if not ready:
            return None
        picker = self.settings.picker
        if picker == "max-score":
            candidates = ready
            timings = self.plugin_timings
            for f in self.filters:
                t0 = time.perf_counter()
                kept = f.filter(ctx, request, candidates)
                if kept:
                    candidates = kept
                tm = timings[f.name]
                tm[0] += time.perf_counter() - t0
                tm[1] += 1
            totals = [0.0] * len(candidates)
            for scorer, weight in self.scorers:
                t0 = time.perf_counter()
                scores = scorer.score(ctx, request, candidates)
                for i, s in enumerate(scores):
                    totals[i] += weight * (0.0 if s < 0.0 else 1.0 if s > 1.0 else s)
                tm = timings[scorer.name]
                tm[0] += time.perf_counter() - t0
                tm[1] += 1
            # random tie-break: shuffle, then a stable sort by score
            order = list(range(len(candidates)))
            self._rng.shuffle(order)
            order.sort(key=lambda i: totals[i], reverse=True)
            ranked = [candidates[i] for i in order]
            rest = [e for e in ready if e not in ranked]
            ranked.extend(rest)
            scores_by = {candidates[i].address: totals[i] for i in order}
        elif picker == "round-robin":
            n = next(self._rr) % len(ready)
            ranked, scores_by = ready[n:] + ready[:n], {}
        else:
            ranked = list(ready)
            self._rng.shuffle(ranked)
            scores_by = {}
        chosen = ranked[0]
        chosen.in_flight += 1
        chosen.in_flight_tokens += request.prompt_tokens
        for scorer, _ in self.scorers:
            scorer.on_pick(ctx, request, chosen)
        return PickResult(chosen, ranked[1:1 + self.settings.fallbacks], scores_by)
