"""Speculative decoding tuning (``inferstack tune-spec``): candidate configs, same-run measurement
on one replica, the recommendation rules, and the report.

Modules: ``candidates`` (parsing, defaults, fitting a time budget), ``runner`` (stacks and
benchmarks, one candidate at a time), ``recommend`` (pure rules on measured runs), ``report``
(HTML), ``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferstack.lazy import lazy_attributes

# The door opens lazily (PEP 562): the CLI reads the candidates' defaults on every call, and the
# runner's report pulls in matplotlib (~0.7 s) only when a tuning run needs it.
_EXPORTS = {
    "Candidate": "candidates", "TuningPlan": "candidates", "parse_candidates": "candidates",
    "plan_budget": "candidates", "Measured": "recommend", "Point": "recommend", "Recommendation": "recommend",
    "recommend": "recommend", "TuneOptions": "runner", "tune": "runner",
}

__all__ = ["Candidate", "Measured", "Point", "Recommendation", "TuneOptions", "TuningPlan",
           "parse_candidates", "plan_budget", "recommend", "tune"]

if TYPE_CHECKING:
    from inferstack.spectune.candidates import Candidate, TuningPlan, parse_candidates, plan_budget
    from inferstack.spectune.recommend import Measured, Point, Recommendation, recommend
    from inferstack.spectune.runner import TuneOptions, tune

__getattr__ = lazy_attributes(__name__, _EXPORTS)
