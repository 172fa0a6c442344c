from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferstack.bench.settings import BenchSettings, SyntheticSettings

T = "http://127.0.0.1:1"


@pytest.mark.parametrize(
    ("profile", "rate", "stages", "levels"),
    [
        ("constant", 2.0, 2, [1.0, 2.0]),
        ("poisson", 3.0, 3, [1.0, 2.0, 3.0]),
        ("constant", 5.0, 1, [5.0]),
        ("concurrency", 8.0, 4, [2.0, 4.0, 6.0, 8.0]),
        ("concurrency", 2.0, 4, [1.0, 1.0, 2.0, 2.0]),
        ("linear-sweep", None, 7, []),
    ],
)
def test_stage_levels_rise_linearly_to_rate(profile: str, rate: float | None, stages: int, levels: list[float]) -> None:
    s = BenchSettings(profile=profile, rate=rate, stages=stages, target=T)  # type: ignore[arg-type]
    assert s.stage_levels() == levels


@pytest.mark.parametrize("profile", ["constant", "poisson", "concurrency"])
def test_profiles_that_schedule_stages_need_a_rate(profile: str) -> None:
    with pytest.raises(ValidationError, match="needs --rate"):
        BenchSettings(profile=profile, target=T)  # type: ignore[arg-type]


def test_chat_api_only_with_shared_prefix() -> None:
    with pytest.raises(ValidationError, match="only supported with dataset 'shared-prefix'"):
        BenchSettings(api="chat", dataset="synthetic", target=T)
    assert BenchSettings(api="chat", dataset="shared-prefix", target=T).api == "chat"


def test_unknown_keys_and_bad_values_are_rejected() -> None:
    with pytest.raises(ValidationError):
        BenchSettings(target=T, stagez=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        BenchSettings(target=T, duration_s=0)
    with pytest.raises(ValidationError, match="input_mean"):
        SyntheticSettings(input_min=100, input_mean=50)
