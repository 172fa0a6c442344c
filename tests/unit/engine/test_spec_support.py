"""Which speculative method runs with which model: checked before any process starts, with the
limitation and the nearest working method in the error."""

import json
import sys
from pathlib import Path

import pytest

from inferstack.engine.spec_support import resolve_speculation
from inferstack.engine.speculative import SpeculativeSettings
from inferstack.errors import ConfigError
from inferstack.models.resolve import ResolvedModel


def _model(tmp_path: Path, name: str, **config) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 49152,
                                                    **config}))
    return folder


@pytest.fixture
def target(tmp_path):
    return ResolvedModel(str(_model(tmp_path, "smollm2")), "smollm2-135m-instruct", "local")


def test_ngram_and_none_always_run(target):
    for method in ("none", "ngram"):
        spec = SpeculativeSettings(method=method)
        assert resolve_speculation(spec, target, Path(sys.executable)) is spec


def test_a_draft_with_the_same_vocabulary_is_resolved_to_its_folder(tmp_path, target):
    small = _model(tmp_path, "small")
    spec = resolve_speculation(SpeculativeSettings(method="draft", model=str(small), num_speculative_tokens=3),
                               target, None)
    assert spec.model == str(small.resolve()) and spec.to_vllm()["method"] == "draft_model"


def test_a_draft_with_another_vocabulary_is_refused(tmp_path, target):
    other = _model(tmp_path, "other", vocab_size=32000)
    with pytest.raises(ConfigError, match="has vocab_size 32000, the target smollm2-135m-instruct 49152"):
        resolve_speculation(SpeculativeSettings(method="draft", model=str(other)), target, None)


def test_a_draft_that_is_no_model_says_so(tmp_path, target):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty' has no config.json; a Hugging Face model folder is expected"):
        resolve_speculation(SpeculativeSettings(method="draft", model=str(tmp_path / "empty")), target, None)
    with pytest.raises(ConfigError, match="speculative.model: model 'nothing-here' is unknown"):
        resolve_speculation(SpeculativeSettings(method="draft", model="nothing-here"), target, None)


def test_eagle_needs_a_head_and_says_what_runs_instead(tmp_path, target):
    plain = _model(tmp_path, "plain")
    with pytest.raises(ConfigError) as err:
        resolve_speculation(SpeculativeSettings(method="eagle3", model=str(plain)), target, None)
    assert "is not an EAGLE head (config.json architectures: LlamaForCausalLM)" in str(err.value)
    assert "none is published for it; the nearest working method here is ngram" in str(err.value)
    head = _model(tmp_path, "head", architectures=["Eagle3LlamaForCausalLM"])
    assert resolve_speculation(SpeculativeSettings(method="eagle3", model=str(head)), target, None).model == str(head)
    with pytest.raises(ValueError, match="needs an EAGLE head trained for the target model"):
        SpeculativeSettings(method="eagle")


def test_mtp_needs_the_models_own_prediction_layers(tmp_path, target):
    with pytest.raises(ConfigError) as err:
        resolve_speculation(SpeculativeSettings(method="mtp"), target, None)
    assert "smollm2-135m-instruct has none (its config.json has no num_nextn_predict_layers" in str(err.value)
    assert "nearest working method here is ngram" in str(err.value)
    deepseek = ResolvedModel(str(_model(tmp_path, "ds", num_nextn_predict_layers=1)), "ds", "local")
    assert resolve_speculation(SpeculativeSettings(method="mtp"), deepseek, None).to_vllm()["method"] == "mtp"


def test_suffix_needs_the_compiled_suffix_tree_in_the_engine_env(target):
    # this interpreter (the package's venv) has no arctic-inference
    with pytest.raises(ConfigError, match="needs arctic-inference's compiled suffix tree"):
        resolve_speculation(SpeculativeSettings(method="suffix"), target, Path(sys.executable))
    with pytest.raises(ValueError, match="suffix decoding proposes a fixed k"):
        SpeculativeSettings(method="suffix", off_above_batch=4)


def test_only_draft_and_eagle_take_a_model():
    with pytest.raises(ValueError, match="speculative method 'ngram' takes no 'model'"):
        SpeculativeSettings(method="ngram", model="/some/where")
