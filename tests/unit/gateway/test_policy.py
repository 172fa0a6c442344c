import random
from collections import Counter

import pytest

from inferstack.gateway.policy import Objectives, Rewrites, has_capacity, is_saturated
from inferstack.gateway.settings import ObjectiveSettings, RewriteSettings, RewriteTarget, SaturationSettings

from .conftest import make_endpoint

SAT = SaturationSettings(queue_depth_threshold=5, kv_cache_util_threshold=0.8, metrics_staleness_ms=200)


@pytest.mark.parametrize(("spec", "capacity"), [
    (dict(), True),
    (dict(waiting=5, kv=0.8), True),  # thresholds are inclusive
    (dict(waiting=6), False),
    (dict(waiting=3, in_flight=3), False),  # the EPP's own in-flight requests count
    (dict(kv=0.81), False),
    (dict(age_s=0.5), False),  # stale metrics: unknown, not idle
])
def test_has_capacity(spec, capacity):
    import time
    assert has_capacity(make_endpoint("a:1", **spec), SAT, time.monotonic()) is capacity


def test_saturated_only_when_no_endpoint_has_capacity():
    import time
    now = time.monotonic()
    full = make_endpoint("a:1", waiting=9)
    assert is_saturated([full, make_endpoint("b:1", kv=0.95)], SAT, now)
    assert not is_saturated([full, make_endpoint("b:1")], SAT, now)
    assert is_saturated([], SAT, now)


def test_rewrite_split_is_statistically_right():
    rw = Rewrites([RewriteSettings(model="chat", targets=[RewriteTarget(model="base", weight=90),
                                                          RewriteTarget(model="adapter", weight=10)])],
                  rng=random.Random(42))
    n = 20_000
    seen = Counter(rw.apply("chat") for _ in range(n))
    # binomial(n, 0.1): sd = sqrt(n * 0.1 * 0.9) ~ 42; allow 5 sd
    assert abs(seen["adapter"] - 0.1 * n) < 5 * (n * 0.09) ** 0.5
    assert seen["adapter"] + seen["base"] == n
    assert rw.apply("other") == "other"


def test_rewrite_zero_weight_target_never_chosen():
    rw = Rewrites([RewriteSettings(model="m", targets=[RewriteTarget(model="a", weight=0),
                                                       RewriteTarget(model="b", weight=1)])])
    assert {rw.apply("m") for _ in range(100)} == {"b"}


def test_rewrite_all_zero_weights_rejected():
    with pytest.raises(ValueError, match="sum to 0"):
        RewriteSettings(model="m", targets=[RewriteTarget(model="a", weight=0)])


def test_objectives():
    ob = Objectives([ObjectiveSettings(model="batch", priority=-1), ObjectiveSettings(model="base", priority=2)])
    assert ob.priority("batch") == -1
    assert ob.priority("chat", "base") == 2  # a rewritten model takes its target's objective
    assert ob.priority("unknown") == 0


def test_objective_priority_by_header_name_then_model():
    obj = Objectives([ObjectiveSettings(name="batch", priority=-2), ObjectiveSettings(model="m", priority=3),
                      ObjectiveSettings(name="critical", model="n", priority=5)])
    assert obj.priority("m", "m", "batch") == -2  # the header wins over the model
    assert obj.priority("m", "m", "") == 3
    assert obj.priority("m", "m", "unknown") == 3  # an unknown objective name falls back to the model
    assert obj.priority("x", "n", "") == 5  # by the rewritten target
    assert obj.priority("x", "x", "") == 0


def test_an_objective_needs_a_name_or_a_model():
    import pydantic
    with pytest.raises(pydantic.ValidationError, match="needs a 'name'"):
        ObjectiveSettings(priority=1)
