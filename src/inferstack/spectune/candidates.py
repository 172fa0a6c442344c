"""Candidate speculative configs for ``inferstack tune-spec``, and fitting them into a time budget.

A candidate is a name plus the ``speculative:`` section a stack would run (``SpeculativeSettings``).
``--candidates`` takes them as ``METHOD[:key=value,...]``: ``none``, ``ngram:k=8``,
``ngram:k=12,min=3,max=8``, ``ngram:k=8,off=4`` (load-aware: no drafts when more than 4 requests
share a step), ``draft:model=/path,k=4``. The baseline ``none`` is always measured
first: every other candidate is judged as a ratio against it, in the same run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import ValidationError

from inferstack.engine.speculative import SPEC_METHODS, SpeculativeSettings
from inferstack.errors import ConfigError

__all__ = ["BASELINE", "DEFAULT_CANDIDATES", "Candidate", "TuningPlan", "parse_candidates", "plan_budget"]

BASELINE = "none"
# ngram's k (tokens proposed per step) and lookup window (n-gram sizes matched against the context):
# short k wastes little when drafts miss, long k pays on copy-heavy text; a wider window finds more.
# Suffix decoding also matches earlier outputs (repeated answers) and sizes each draft by its match.
DEFAULT_CANDIDATES = ("none", "ngram:k=4", "ngram:k=8", "ngram:k=12", "suffix:k=8", "suffix:k=16")
_KEYS = {"k": "num_speculative_tokens", "min": "prompt_lookup_min", "max": "prompt_lookup_max",
         "off": "off_above_batch", "model": "model"}


@dataclass(frozen=True)
class Candidate:
    name: str  # also the run directory's name: [a-z0-9-]
    speculative: SpeculativeSettings

    def section(self) -> dict[str, object]:
        """The ``speculative:`` section of a stack config running this candidate."""
        if not self.speculative.enabled:
            return {"method": "none"}
        section = self.speculative.model_dump(mode="json", exclude_none=True)
        if self.speculative.method != "ngram":  # the lookup window is ngram's alone
            section.pop("prompt_lookup_min", None)
            section.pop("prompt_lookup_max", None)
        return section

    def describe(self) -> str:
        s = self.speculative
        if not s.enabled:
            return "no speculation"
        load = "" if s.off_above_batch is None else f", off above {s.off_above_batch} requests per step"
        if s.method == "ngram":
            return f"ngram k={s.num_speculative_tokens}, lookup {s.prompt_lookup_min}..{s.prompt_lookup_max}{load}"
        model = f", model {s.model}" if s.model else ""
        return f"{s.method} k={s.num_speculative_tokens}{model}{load}"


def _parse_one(text: str) -> Candidate:
    method, _, rest = text.strip().partition(":")
    if method not in SPEC_METHODS:
        raise ConfigError(f"candidate '{text}': unknown method '{method}'; one of {', '.join(SPEC_METHODS)}")
    fields: dict[str, object] = {"method": method}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in _KEYS:
            raise ConfigError(f"candidate '{text}': '{item}' is not KEY=VALUE with KEY one of {', '.join(_KEYS)}")
        if key == "model":
            fields["model"] = value
        else:
            try:
                fields[_KEYS[key]] = int(value)
            except ValueError:
                raise ConfigError(f"candidate '{text}': {key} must be an integer, got '{value}'") from None
    try:
        settings = SpeculativeSettings.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(f"candidate '{text}': {problems}") from None
    return Candidate(_name(settings), settings)


def _name(s: SpeculativeSettings) -> str:
    if not s.enabled:
        return BASELINE
    name = f"{s.method}-k{s.num_speculative_tokens}"
    if s.method == "ngram" and (s.prompt_lookup_min, s.prompt_lookup_max) != (2, 5):
        name += f"-l{s.prompt_lookup_min}-{s.prompt_lookup_max}"
    if s.off_above_batch is not None:
        name += f"-off{s.off_above_batch}"
    return name


def parse_candidates(texts: list[str] | tuple[str, ...]) -> list[Candidate]:
    """The candidates in order, the baseline first (added if missing); duplicates are errors."""
    out = [_parse_one(t) for t in texts]
    names = [c.name for c in out]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"candidate {name} is listed twice in --candidates")
    baseline = [c for c in out if c.name == BASELINE]
    rest = [c for c in out if c.name != BASELINE]
    if not rest:
        raise ConfigError("--candidates needs at least one speculative config besides none (the baseline)")
    return (baseline or [_parse_one(BASELINE)]) + rest


@dataclass(frozen=True)
class TuningPlan:
    candidates: list[Candidate]
    loads: int  # load levels (stages) per candidate
    stage_s: int  # seconds per stage
    probe_requests: int  # the baseline's saturation probe burst
    estimate_s: float  # expected wall time
    dropped: list[str]  # candidates the budget left out

    def describe(self) -> str:
        text = (f"{len(self.candidates)} configs x {self.loads} loads x {self.stage_s}s "
                f"(~{self.estimate_s / 60:.0f} min)")
        return text + (f"; left out for the budget: {', '.join(self.dropped)}" if self.dropped else "")


def plan_budget(candidates: list[Candidate], budget_s: float, loads: int, start_s: float = 50.0,
                min_stage_s: int = 3, max_stage_s: int = 60) -> TuningPlan:
    """Fit the candidates into ``budget_s``: each costs a replica start (``start_s``, measured on
    this kind of machine) plus ``loads`` stages; the baseline also runs the saturation probe. The
    stage length shrinks first (down to ``min_stage_s``), then candidates are left out from the
    end of the list (the baseline and the first other one are always kept)."""
    probe_requests = 20 if budget_s < 600 else 60
    probe_s = 2.0 * probe_requests  # an upper estimate on a slow 1-core replica
    n = len(candidates)
    while True:
        fixed = n * (start_s + loads * 1.0) + probe_s  # + the pause between stages
        stage_s = math.floor((budget_s - fixed) / (n * loads)) if budget_s > fixed else 0
        if stage_s >= min_stage_s or n <= 2:
            stage_s = max(min_stage_s, min(max_stage_s, stage_s))
            return TuningPlan(candidates[:n], loads, stage_s, probe_requests,
                              fixed + n * loads * stage_s, [c.name for c in candidates[n:]])
        n -= 1
