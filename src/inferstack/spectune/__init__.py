"""Speculative decoding tuning (``inferstack tune-spec``): candidate configs, same-run measurement
on one replica, the recommendation rules, and the report.

Modules: ``candidates`` (parsing, defaults, fitting a time budget), ``runner`` (stacks and
benchmarks, one candidate at a time), ``recommend`` (pure rules on measured runs), ``report``
(HTML), ``cli``.
"""

from inferstack.spectune.candidates import Candidate, TuningPlan, parse_candidates, plan_budget
from inferstack.spectune.recommend import Measured, Point, Recommendation, recommend
from inferstack.spectune.runner import TuneOptions, tune

__all__ = ["Candidate", "Measured", "Point", "Recommendation", "TuneOptions", "TuningPlan",
           "parse_candidates", "plan_budget", "recommend", "tune"]
