"""The stack configs tune-spec measures with and recommends (no processes)."""

from pathlib import Path

import pytest
import yaml

from inferstack.errors import ConfigError
from inferstack.spectune.candidates import parse_candidates, plan_budget
from inferstack.spectune.runner import TuneOptions, load_base, measurement_config, recommended_config, tune
from inferstack.stack.config import StackConfig

USER = {"replicas": 2, "engine": {"max_model_len": 1024, "extra_args": ["--seed", "7"]},
        "autoscaling": {"min_replicas": 1, "max_replicas": 2}, "gateway": {"port": 8088},
        "speculative": {"method": "ngram", "num_speculative_tokens": 5}}


def test_a_candidate_is_measured_on_one_direct_replica_with_the_users_engine_settings():
    _, ngram = parse_candidates(["ngram:k=12,off=2"])
    config = measurement_config(USER, ngram, temperature=0.0, base_port=19950)
    parsed = StackConfig.model_validate(config)
    assert parsed.replicas == 1 and not parsed.gateway.enabled and parsed.autoscaling is None
    assert parsed.engine.base_port == 19950 and parsed.engine.max_model_len == 1024
    assert parsed.engine.extra_args == ["--seed", "7", "--override-generation-config", '{"temperature": 0.0}']
    assert parsed.speculative.to_vllm()["num_speculative_tokens_per_batch_size"] == [[1, 2, 12], [3, 3, 0]]
    assert USER["engine"]["extra_args"] == ["--seed", "7"]  # the user's mapping is not changed


def test_the_recommendation_is_the_users_config_with_the_winners_section(tmp_path: Path):
    none, ngram = parse_candidates(["ngram:k=8"])
    rec = recommended_config(USER, ngram, temperature=None)
    assert {k: v for k, v in rec.items() if k != "speculative"} == {k: v for k, v in USER.items() if k != "speculative"}
    assert rec["speculative"] == {"method": "ngram", "num_speculative_tokens": 8, "prompt_lookup_min": 2,
                                  "prompt_lookup_max": 5}
    assert recommended_config(USER, none, None)["speculative"] == {"method": "none"}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(USER))
    assert load_base(path) == USER and load_base(None) == {}


def test_an_output_that_holds_a_tuning_run_is_refused_before_anything_starts(tmp_path: Path):
    (tmp_path / "runs" / "none").mkdir(parents=True)
    plan = plan_budget(parse_candidates(["ngram:k=8"]), budget_s=60, loads=2)
    said: list[str] = []
    with pytest.raises(ConfigError, match="already holds a tuning run; choose a new directory"):
        tune(TuneOptions(tmp_path, {}, plan), say=said.append)
    assert said == []
