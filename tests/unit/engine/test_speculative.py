import json

import pytest
from pydantic import ValidationError

from inferstack.engine.speculative import SpeculativeSettings


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"method": "none"}, None),
        (
            {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 1, "prompt_lookup_max": 3},
            {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 1, "prompt_lookup_max": 3},
        ),
        (
            {"method": "draft", "model": "/m/draft", "draft_tensor_parallel_size": 1},
            {"method": "draft_model", "num_speculative_tokens": 8, "model": "/m/draft",
             "draft_tensor_parallel_size": 1},
        ),
        (
            {"method": "eagle", "model": "org/eagle-head", "num_speculative_tokens": 3},
            {"method": "eagle", "num_speculative_tokens": 3, "model": "org/eagle-head"},
        ),
        (
            {"method": "eagle3", "model": "org/eagle3-head"},
            {"method": "eagle3", "num_speculative_tokens": 8, "model": "org/eagle3-head"},
        ),
    ],
)
def test_to_vllm(settings, expected):
    assert SpeculativeSettings(**settings).to_vllm() == expected


def test_default_is_ngram():
    assert SpeculativeSettings().method == "ngram"


def test_vllm_args_are_compact_json():
    args = SpeculativeSettings(method="ngram", num_speculative_tokens=5).to_vllm_args()
    assert args[0] == "--speculative-config"
    assert json.loads(args[1])["num_speculative_tokens"] == 5
    assert " " not in args[1]
    assert SpeculativeSettings(method="none").to_vllm_args() == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"method": "medusa"}, "method"),
        ({"method": "eagle"}, "needs an EAGLE head"),
        ({"method": "eagle3"}, "needs an EAGLE head"),
        ({"method": "draft"}, "needs a draft model"),
        ({"method": "ngram", "num_speculative_tokens": 0}, "greater than or equal to 1"),
        ({"method": "ngram", "num_speculative_tokens": -2}, "greater than or equal to 1"),
        ({"method": "ngram", "prompt_lookup_min": 4, "prompt_lookup_max": 2}, "cannot exceed"),
        ({"method": "ngram", "lookahead": 3}, "Extra inputs"),
    ],
)
def test_invalid_settings_are_rejected(settings, message):
    with pytest.raises(ValidationError, match=message):
        SpeculativeSettings(**settings)
