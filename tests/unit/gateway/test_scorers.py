import pytest

from inferstack.gateway.plugins.filters import FreshMetricsFilter, HasCapacityFilter
from inferstack.gateway.plugins.scorers import (KvCacheScorer, LoraAffinityScorer, QueueParams, QueueScorer,
                                                RunningScorer, min_max_inverse)
from inferstack.gateway.scheduling import NoParams
from inferstack.gateway.settings import SchedulerSettings

from .conftest import make_endpoint, make_request

S = SchedulerSettings()


@pytest.mark.parametrize(("values", "expected"), [
    ([0, 0], [1.0, 1.0]),
    ([0, 4], [1.0, 0.0]),
    ([2, 4, 3], [1.0, 0.0, 0.5]),
    ([5], [1.0]),
])
def test_min_max_inverse(values, expected):
    assert min_max_inverse(values) == pytest.approx(expected)


@pytest.mark.parametrize(("specs", "expected"), [
    ([dict(waiting=0), dict(waiting=4)], [1.0, 0.5]),
    ([dict(waiting=0, in_flight=4), dict(waiting=2)], [0.5, 0.75]),  # the EPP's own in-flight counts
    ([dict(waiting=3), dict(waiting=3)], [0.625, 0.625]),
    ([dict(waiting=8), dict(waiting=20)], [0.0, 0.0]),  # clamped at max_queue
])
def test_queue_scorer(ctx, specs, expected):
    eps = [make_endpoint(f"e{i}:1", **s) for i, s in enumerate(specs)]
    assert QueueScorer(QueueParams(), S).score(ctx, make_request(), eps) == pytest.approx(expected)


def test_queue_scorer_max_queue_parameter(ctx):
    eps = [make_endpoint("a:1", waiting=1), make_endpoint("b:1", waiting=2)]
    assert QueueScorer(QueueParams(max_queue=2), S).score(ctx, make_request(), eps) == pytest.approx([0.5, 0.0])


def test_running_scorer(ctx):
    eps = [make_endpoint("a:1", running=8), make_endpoint("b:1", running=2), make_endpoint("c:1", running=5)]
    assert RunningScorer(NoParams(), S).score(ctx, make_request(), eps) == pytest.approx([0.0, 1.0, 0.5])


def test_kv_cache_scorer(ctx):
    eps = [make_endpoint("a:1", kv=0.0), make_endpoint("b:1", kv=0.75), make_endpoint("c:1", kv=1.0)]
    assert KvCacheScorer(NoParams(), S).score(ctx, make_request(), eps) == pytest.approx([1.0, 0.25, 0.0])


@pytest.mark.parametrize(("model", "specs", "expected"), [
    ("ad", [dict(loras=frozenset({"ad"}), max_loras=2), dict(loras=frozenset(), max_loras=2),
            dict(loras=frozenset({"x", "y"}), max_loras=2)], [1.0, 0.5, 0.0]),
    ("base", [dict(), dict()], [1.0, 1.0]),  # no adapters, no slots: neutral
])
def test_lora_scorer(ctx, model, specs, expected):
    eps = [make_endpoint(f"e{i}:1", **s) for i, s in enumerate(specs)]
    assert LoraAffinityScorer(NoParams(), S).score(ctx, make_request(model=model), eps) == expected


def test_lora_scorer_waiting_adapter(ctx):
    ep = make_endpoint("a:1", max_loras=1, loras=frozenset({"x"}))
    ep.metrics.waiting_loras = frozenset({"ad"})
    other = make_endpoint("b:1", max_loras=1, loras=frozenset({"x"}))
    assert LoraAffinityScorer(NoParams(), S).score(ctx, make_request(model="ad"), [ep, other]) == [0.8, 0.0]


def test_fresh_metrics_filter(ctx):
    eps = [make_endpoint("a:1", age_s=0.05), make_endpoint("b:1", age_s=5.0)]
    assert [e.address for e in FreshMetricsFilter(NoParams()).filter(ctx, make_request(), eps)] == ["a:1"]


def test_has_capacity_filter(ctx):
    eps = [make_endpoint("a:1", waiting=6), make_endpoint("b:1", kv=0.9), make_endpoint("c:1", waiting=5, kv=0.8),
           make_endpoint("d:1", waiting=3, in_flight=3)]
    assert [e.address for e in HasCapacityFilter(NoParams()).filter(ctx, make_request(), eps)] == ["c:1"]
