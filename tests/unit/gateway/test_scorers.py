import pytest

from inferstack.gateway.plugins.filters import FreshMetricsFilter, HasCapacityFilter
from inferstack.gateway.plugins.scorers import (KvCacheScorer, LoadParams, LoadScorer, LoraAffinityScorer,
                                                NoHitLruParams, NoHitLruScorer, QueueParams, QueueScorer,
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
            dict(loras=frozenset({"x", "y"}), max_loras=2)], [1.0, 0.8, 0.0]),
    ("base", [dict(), dict()], [1.0, 1.0]),  # no adapters, no slots: neutral
])
def test_lora_scorer(ctx, model, specs, expected):
    eps = [make_endpoint(f"e{i}:1", **s) for i, s in enumerate(specs)]
    assert LoraAffinityScorer(NoParams(), S).score(ctx, make_request(model=model), eps) == expected


def test_lora_scorer_waiting_adapter(ctx):
    ep = make_endpoint("a:1", max_loras=1, loras=frozenset({"x"}))
    ep.metrics.waiting_loras = frozenset({"ad"})
    other = make_endpoint("b:1", max_loras=1, loras=frozenset({"x"}))
    assert LoraAffinityScorer(NoParams(), S).score(ctx, make_request(model="ad"), [ep, other]) == [0.6, 0.0]


def test_fresh_metrics_filter(ctx):
    eps = [make_endpoint("a:1", age_s=0.05), make_endpoint("b:1", age_s=5.0)]
    assert [e.address for e in FreshMetricsFilter(NoParams()).filter(ctx, make_request(), eps)] == ["a:1"]


def test_has_capacity_filter(ctx):
    eps = [make_endpoint("a:1", waiting=6), make_endpoint("b:1", kv=0.9), make_endpoint("c:1", waiting=5, kv=0.8),
           make_endpoint("d:1", waiting=3, in_flight=3)]
    assert [e.address for e in HasCapacityFilter(NoParams()).filter(ctx, make_request(), eps)] == ["c:1"]


@pytest.mark.parametrize(("specs", "expected"), [
    ([dict(running=4), dict(waiting=2, running=2)], [0.75, 0.75]),  # outstanding = waiting + running
    ([dict(running=2, in_flight=2), dict()], [0.75, 1.0]),  # untracked: sent since the scrape add up
    ([dict(running=2, in_flight=6, tracked=True), dict()], [0.625, 1.0]),  # tracked: the newer, larger count
    ([dict(running=5, in_flight=2, tracked=True), dict()], [0.6875, 1.0]),  # tracked: the scrape when larger
    ([dict(running=40), dict()], [0.0, 1.0]),  # clamped at max_load
    ([dict(age_s=1.0), dict()], [0.0, 1.0]),  # stale metrics: unknown, not idle
    ([dict(age_s=1.0, running=9, in_flight=4, tracked=True), dict()], [0.75, 1.0]),  # stale: our own count
])
def test_load_scorer(ctx, specs, expected):
    eps = [make_endpoint(f"e{i}:1", **s) for i, s in enumerate(specs)]
    assert LoadScorer(LoadParams(), S).score(ctx, make_request(), eps) == pytest.approx(expected)


@pytest.mark.parametrize("scorer", [QueueScorer(QueueParams(), S), KvCacheScorer(NoParams(), S),
                                    RunningScorer(NoParams(), S)])
def test_metric_scorers_score_stale_endpoints_zero(ctx, scorer):
    eps = [make_endpoint("a:1", age_s=1.0), make_endpoint("b:1", running=1)]
    assert scorer.score(ctx, make_request(), eps)[0] == 0.0


def test_no_hit_lru_spreads_cold_requests_and_is_neutral_for_warm_ones(ctx):
    lru = NoHitLruScorer(NoHitLruParams(min_match=0.5), S)
    eps = [make_endpoint("a:1"), make_endpoint("b:1"), make_endpoint("c:1")]
    cold = make_request()
    cold.prefix_best_match = 0.0
    assert lru.score(ctx, cold, eps) == [1.0, 1.0, 1.0]  # none got a cold request yet: a tie
    lru.on_pick(ctx, cold, eps[0])
    assert lru.score(ctx, cold, eps) == [0.0, 1.0, 1.0]
    lru.on_pick(ctx, cold, eps[2])
    assert lru.score(ctx, cold, eps) == [0.5, 1.0, 0.0]
    warm = make_request()
    warm.prefix_best_match = 0.8
    assert lru.score(ctx, warm, eps) == [1.0, 1.0, 1.0]
    lru.on_pick(ctx, warm, eps[1])  # a warm pick does not count as a cold one
    assert lru.score(ctx, cold, eps) == [0.5, 1.0, 0.0]


def test_no_hit_lru_needs_the_prefix_scorer_before_it():
    from inferstack.errors import ConfigError
    from inferstack.gateway.scheduling import Scheduler
    from inferstack.gateway.settings import ScorerSettings

    with pytest.raises(ConfigError, match="needs scorer 'prefix' or 'precise-prefix' listed before it"):
        Scheduler(SchedulerSettings(scorers=[ScorerSettings(type="no-hit-lru"), ScorerSettings(type="prefix")]))


def test_precise_prefix_counts_a_routed_requests_blocks_until_its_events_could_have_come():
    from inferstack.gateway.kv_events import KvBlockIndex
    from inferstack.gateway.plugins.scorers import PrecisePrefixParams, PrecisePrefixScorer
    from inferstack.gateway.scheduling import SchedContext
    from inferstack.gateway.settings import SaturationSettings

    def at(now: float) -> SchedContext:
        return SchedContext(now=now, staleness_s=0.2, saturation=SaturationSettings())

    scorer = PrecisePrefixScorer(PrecisePrefixParams(pending_s=10), S)
    scorer.index = KvBlockIndex(1000)
    eps = [make_endpoint("a:1"), make_endpoint("b:1")]
    first, second = make_request(), make_request()
    first.block_keys, second.block_keys = [1, 2, 3, 4], [1, 2, 3, 9]
    assert scorer.score(at(0.0), first, eps) == [0.0, 0.0] and first.prefix_best_match == 0.0
    scorer.on_pick(at(0.0), first, eps[1])  # its prefill has not run yet: no event
    assert scorer.score(at(1.0), second, eps) == [0.0, 0.75]  # the shared 3 blocks follow it to b
    assert second.held_blocks == {"a:1": 0, "b:1": 3}  # what the picker predicts vLLM will find cached
    assert scorer.score(at(10.5), second, eps) == [0.0, 0.0]  # no event came in time: forgotten
    scorer.forget("b:1")
    assert scorer.score(at(1.0), second, eps) == [0.0, 0.0]
    off = PrecisePrefixScorer(PrecisePrefixParams(pending_s=0), S)
    off.index = KvBlockIndex(1000)
    off.on_pick(at(0.0), first, eps[1])
    assert off.score(at(1.0), second, eps) == [0.0, 0.0]  # only what the events report
