import random
from collections import Counter

import pytest

from inferstack.errors import ConfigError
from inferstack.gateway.scheduling import FILTERS, SCORERS, Scheduler
from inferstack.gateway.settings import ScorerSettings, SchedulerSettings

from .conftest import make_endpoint, make_request


def sched(**kw) -> Scheduler:
    return Scheduler(SchedulerSettings(**kw), rng=random.Random(0))


def test_registry_has_builtins():
    assert {"queue", "running", "kv-cache", "prefix", "lora"} <= set(SCORERS)
    assert {"fresh-metrics", "has-capacity"} <= set(FILTERS)


def test_max_score_picks_best_and_orders_fallbacks(ctx):
    s = sched(scorers=[ScorerSettings(type="queue")], fallbacks=2)
    eps = [make_endpoint("a:1", waiting=5), make_endpoint("b:1", waiting=0), make_endpoint("c:1", waiting=2)]
    r = s.schedule(ctx, make_request(), eps)
    assert r.endpoint.address == "b:1"
    assert [e.address for e in r.fallbacks] == ["c:1", "a:1"]
    assert r.endpoint.in_flight == 1


def test_weights_decide(ctx):
    eps = [make_endpoint("a:1", waiting=0, kv=0.9), make_endpoint("b:1", waiting=4, kv=0.0)]
    by_queue = sched(scorers=[ScorerSettings(type="queue", weight=3), ScorerSettings(type="kv-cache", weight=1)])
    by_kv = sched(scorers=[ScorerSettings(type="queue", weight=1), ScorerSettings(type="kv-cache", weight=3)])
    assert by_queue.schedule(ctx, make_request(), [*eps]).endpoint.address == "a:1"
    for e in eps:
        e.in_flight = 0
    assert by_kv.schedule(ctx, make_request(), [*eps]).endpoint.address == "b:1"


def test_ties_break_randomly(ctx):
    s = sched(scorers=[ScorerSettings(type="kv-cache")])
    eps = [make_endpoint("a:1"), make_endpoint("b:1"), make_endpoint("c:1")]
    seen = Counter(s.schedule(ctx, make_request(), eps).endpoint.address for _ in range(300))
    assert set(seen) == {"a:1", "b:1", "c:1"}
    assert min(seen.values()) > 50


def test_in_flight_spreads_a_burst(ctx):
    # between two scrapes, all metrics are equal: the EPP's own count must spread the burst
    s = sched(scorers=[ScorerSettings(type="queue")])
    eps = [make_endpoint("a:1"), make_endpoint("b:1")]
    seen = Counter(s.schedule(ctx, make_request(), eps).endpoint.address for _ in range(10))
    assert seen == {"a:1": 5, "b:1": 5}


def test_filters_narrow_but_never_empty(ctx):
    s = sched(filters=["fresh-metrics"], scorers=[ScorerSettings(type="queue")])
    stale = [make_endpoint("a:1", age_s=10), make_endpoint("b:1", age_s=10, waiting=3)]
    assert s.schedule(ctx, make_request(), stale).endpoint.address == "a:1"  # kept: nothing fresh
    mixed = [make_endpoint("a:1", age_s=10), make_endpoint("b:1", waiting=3)]
    r = s.schedule(ctx, make_request(), mixed)
    assert r.endpoint.address == "b:1"
    assert [e.address for e in r.fallbacks] == ["a:1"]  # filtered-out endpoints remain fallbacks


def test_round_robin_and_random(ctx):
    eps = [make_endpoint("a:1", waiting=100), make_endpoint("b:1")]
    rr = sched(picker="round-robin", scorers=[])
    assert [rr.schedule(ctx, make_request(), eps).endpoint.address for _ in range(4)] == ["a:1", "b:1"] * 2
    rnd = sched(picker="random", scorers=[])
    assert set(rnd.schedule(ctx, make_request(), eps).endpoint.address for _ in range(50)) == {"a:1", "b:1"}


def test_no_endpoints(ctx):
    assert sched().schedule(ctx, make_request(), []) is None


@pytest.mark.parametrize(("kw", "message"), [
    (dict(scorers=[ScorerSettings(type="nope")]), r"scheduler.scorers\[0\].type has value 'nope'"),
    (dict(filters=["nope"]), r"scheduler.filters\[0\] has value 'nope'"),
    (dict(scorers=[]), "needs at least one scorer"),
    (dict(scorers=[ScorerSettings(type="queue", parameters={"x": 1})]), "bad parameters"),
])
def test_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        Scheduler(SchedulerSettings(**kw))


def test_plugin_timings_are_recorded(ctx):
    s = sched()
    s.schedule(ctx, make_request(), [make_endpoint("a:1"), make_endpoint("b:1")])
    assert s.plugin_timings["queue"][1] == 1 and s.plugin_timings["prefix"][0] >= 0
