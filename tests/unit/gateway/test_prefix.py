import random

import pytest
from collections import Counter

from inferstack.gateway.prefix import PrefixIndex, PrefixParams, PrefixScorer, block_hashes
from inferstack.gateway.scheduling import Scheduler
from inferstack.gateway.settings import ScorerSettings, SchedulerSettings

from .conftest import make_endpoint, make_request


def test_block_hashes_chain():
    a = block_hashes("x" * 40 + "y" * 40, 20)
    b = block_hashes("x" * 40 + "z" * 40, 20)
    assert len(a) == 4
    assert a[:2] == b[:2] and a[2] != b[2]
    assert block_hashes("abc", 20) == []  # partial blocks are ignored
    # same block text at another position hashes differently (the chain names the whole prefix)
    assert block_hashes("y" * 20, 20)[0] != a[2]
    assert len(block_hashes("x" * 1000, 10, max_blocks=7)) == 7


def test_index_bounds_and_lru_eviction():
    idx = PrefixIndex(capacity=3)
    idx.add([1, 2, 3])
    idx.add([1])  # touch 1: now 2 is the oldest
    idx.add([4])
    assert len(idx) == 3
    assert 2 not in idx and 1 in idx and 3 in idx and 4 in idx
    idx.add(list(range(100, 200)))
    assert len(idx) == 3 and list(range(197, 200)) == [h for h in range(197, 200) if h in idx]


def test_index_match_counts_leading_blocks():
    idx = PrefixIndex(10)
    idx.add([1, 2, 3])
    assert idx.match([1, 2, 3, 4]) == 3
    assert idx.match([1, 9, 3]) == 1
    assert idx.match([9, 1]) == 0


def test_prefix_scorer_scores_and_records(ctx):
    s = PrefixScorer(PrefixParams(), SchedulerSettings(prefix_block_chars=16))
    a, b = make_endpoint("a:1"), make_endpoint("b:1")
    first = make_request("p" * 64)
    assert s.score(ctx, first, [a, b]) == [0.0, 0.0]
    s.on_pick(ctx, first, a)
    half = make_request("p" * 32 + "q" * 32)
    assert s.score(ctx, half, [a, b]) == [0.5, 0.0]
    assert s.score(ctx, make_request("p" * 64, model="other"), [a, b]) == [0.0, 0.0]  # models don't share
    assert s.score(ctx, make_request("short"), [a, b]) == [0.0, 0.0]
    s.forget("a:1")
    assert s.score(ctx, make_request("p" * 64), [a, b]) == [0.0, 0.0]


def test_shared_prefixes_stick_while_others_spread(ctx):
    sched = Scheduler(SchedulerSettings(scorers=[ScorerSettings(type="queue"), ScorerSettings(type="prefix")],
                                        prefix_block_chars=64), rng=random.Random(1))
    eps = [make_endpoint("a:1"), make_endpoint("b:1")]
    system = "You are a helpful assistant. " * 40
    sticky = Counter()
    for i in range(20):
        sticky[sched.schedule(ctx, make_request(system + f"question {i}"), eps).endpoint.address] += 1
        for e in eps:
            e.in_flight = 0  # as if a scrape came between requests
    assert max(sticky.values()) == 20
    spread = Counter()
    for i in range(20):
        spread[sched.schedule(ctx, make_request(f"{i} unrelated " * 30), eps).endpoint.address] += 1
    assert min(spread.values()) >= 8


def test_default_profile_keeps_a_prefix_burst_together_until_load_outweighs_it(ctx):
    """A shared-prefix burst stays on one endpoint until its queue (waiting + in flight) is 8 longer
    than the other's (the queue scorer's max_queue: one full prefix match), then spills over, and
    both endpoints then hold the prefix."""
    sched = Scheduler(SchedulerSettings(prefix_block_chars=64), rng=random.Random(3))
    eps = [make_endpoint("a:1"), make_endpoint("b:1")]
    system = "Shared system prompt for the burst. " * 40
    picks = [sched.schedule(ctx, make_request(system + f"q{i}"), eps).endpoint.address for i in range(24)]
    first = picks[0]
    assert picks[:10] == [first] * 10
    assert picks[10] != first
    assert abs(picks.count("a:1") - picks.count("b:1")) <= 10  # the queue bounds the imbalance


@pytest.mark.parametrize(("gap", "same_before_spill"), [(None, 12), (2, 3), (5, 6)])
def test_max_load_gap_cuts_affinity_past_the_gap(ctx, gap, same_before_spill):
    settings = SchedulerSettings(prefix_block_chars=64, scorers=[
        ScorerSettings(type="prefix", weight=2, parameters={"max_load_gap": gap}), ScorerSettings(type="load")])
    sched = Scheduler(settings, rng=random.Random(3))
    eps = [make_endpoint("a:1"), make_endpoint("b:1")]
    system = "Shared system prompt for the burst. " * 40
    picks = [sched.schedule(ctx, make_request(system + f"q{i}"), eps).endpoint.address for i in range(12)]
    assert picks[:same_before_spill] == [picks[0]] * same_before_spill
    if same_before_spill < 12:
        assert picks[same_before_spill] != picks[0]
