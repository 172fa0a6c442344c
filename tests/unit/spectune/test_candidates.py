"""Candidate parsing (``--candidates``) and fitting them into a time budget."""

import pytest

from inferstack.errors import ConfigError
from inferstack.spectune.candidates import DEFAULT_CANDIDATES, parse_candidates, plan_budget


def test_default_candidates_parse_with_the_baseline_first_and_distinct_names():
    cands = parse_candidates(list(DEFAULT_CANDIDATES))
    assert [c.name for c in cands] == ["none", "ngram-k4", "ngram-k8", "ngram-k12", "suffix-k8", "suffix-k16"]
    assert cands[0].section() == {"method": "none"}
    assert cands[4].section() == {"method": "suffix", "num_speculative_tokens": 8}
    assert cands[2].describe() == "ngram k=8, lookup 2..5" and cands[5].describe() == "suffix k=16"
    wide = parse_candidates(["ngram:k=8,min=3,max=8,off=4"])[1]
    assert wide.name == "ngram-k8-l3-8-off4"
    assert wide.describe() == "ngram k=8, lookup 3..8, off above 4 requests per step"


def test_the_baseline_is_added_and_moved_first():
    assert [c.name for c in parse_candidates(["ngram:k=6"])] == ["none", "ngram-k6"]
    assert [c.name for c in parse_candidates(["ngram:k=6", "none"])] == ["none", "ngram-k6"]


def test_a_draft_candidate_keeps_its_model():
    (_, draft) = parse_candidates(["draft:model=/models/small,k=4"])
    assert draft.name == "draft-k4" and draft.section()["model"] == "/models/small"


@pytest.mark.parametrize(("texts", "message"), [
    (["bogus"], "unknown method 'bogus'"),
    (["ngram:k"], "'k' is not KEY=VALUE"),
    (["ngram:depth=3"], "'depth=3' is not KEY=VALUE"),
    (["ngram:k=eight"], "k must be an integer, got 'eight'"),
    (["ngram:k=0"], "greater than or equal to 1"),
    (["ngram:min=6,max=3"], "prompt_lookup_min (6) cannot exceed prompt_lookup_max (3)"),
    (["draft:k=4"], "needs a draft model"),
    (["none"], "at least one speculative config besides none"),
    (["ngram:k=8", "ngram:k=8"], "ngram-k8 is listed twice"),
])
def test_bad_candidates_say_what_is_wrong(texts, message):
    with pytest.raises(ConfigError) as err:
        parse_candidates(texts)
    assert message in str(err.value)


def test_a_generous_budget_keeps_every_candidate_with_capped_stages():
    plan = plan_budget(parse_candidates(list(DEFAULT_CANDIDATES)), budget_s=10_000, loads=3)
    assert len(plan.candidates) == 6 and plan.stage_s == 60 and not plan.dropped
    assert plan.estimate_s <= 10_000


def test_a_tight_budget_shortens_stages_then_leaves_candidates_out_from_the_end():
    cands = parse_candidates(list(DEFAULT_CANDIDATES))
    plan = plan_budget(cands, budget_s=600, loads=3)
    assert plan.stage_s >= 3 and plan.estimate_s <= 600
    assert plan.dropped == [c.name for c in cands[len(plan.candidates):]]
    tiny = plan_budget(cands, budget_s=60, loads=2)  # below any useful plan: baseline + one, 3 s stages
    assert [c.name for c in tiny.candidates] == ["none", "ngram-k4"] and tiny.stage_s == 3
    assert "left out for the budget" in tiny.describe()
