import pytest

from inferstack.stack.config import StackConfig, load_config
from inferstack.errors import ConfigError


def test_defaults_serve_the_bundled_model_with_ngram():
    config = StackConfig()
    assert config.model == "smollm2-135m-instruct"
    assert config.replicas == 1
    assert config.speculative.method == "ngram"
    assert config.engine.enforce_eager


def test_file_then_overrides(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text("replicas: 3\nengine: {max_model_len: 1024, kv_cache_gib: 2}\n"
                    "speculative: {method: ngram, num_speculative_tokens: 4}\n")
    config = load_config(path, {"replicas": 2, "engine": {"base_port": 9000}})
    assert config.replicas == 2
    assert config.engine.max_model_len == 1024  # kept from the file: overrides merge deeply
    assert config.engine.base_port == 9000
    assert config.speculative.num_speculative_tokens == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("replicas: -1\n", "'replicas' has value -1; Input should be greater than or equal to 0"),
        ("replica: 2\n", "unknown key 'replica'"),
        ("engine: {kv_cache_gb: 2}\n", "unknown key 'engine.kv_cache_gb'"),
        ("speculative: {method: eagle}\n", "needs an EAGLE head"),
        ("speculative: {method: lookahead}\n", "'speculative.method' has value 'lookahead'"),
        ("- a\n- b\n", "must be a mapping"),
        ("replicas: [\n", "not valid YAML"),
    ],
)
def test_invalid_config_names_key_and_value(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    if "mapping" not in message and "YAML" not in message:
        assert str(path) in str(err.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_examples_load():
    from pathlib import Path

    examples = sorted((Path(__file__).parents[3] / "examples").glob("stack*.yaml"))
    assert examples, "examples/stack*.yaml should exist"
    for path in examples:
        load_config(path)


def test_lora_with_speculation_must_fit_vllms_batched_token_limit():
    with pytest.raises(ConfigError, match=r"128 x 17 is more; lower engine.max_num_seqs"):
        load_config(None, {"lora": {"enabled": True}, "speculative": {"num_speculative_tokens": 16}})
    ok = load_config(None, {"lora": {"enabled": True}, "engine": {"max_num_seqs": 64},
                            "speculative": {"num_speculative_tokens": 16}})
    assert ok.lora.enabled and ok.engine.max_num_seqs == 64
    assert load_config(None, {"lora": {"enabled": True}}).speculative.num_speculative_tokens == 8
