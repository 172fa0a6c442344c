import json

import pytest
from fake_vllm import make_adapter
from pydantic import ValidationError

from inferstack.errors import ConfigError
from inferstack.lora import LoraSettings, check_adapter_name, resolve_adapter_source
from inferstack.stack.config import StackConfig, load_config

BASE = "smollm2-135m-instruct"


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_off_by_default_passes_nothing():
    lora = StackConfig().lora
    assert not lora.enabled
    assert lora.to_vllm_args(BASE) == []
    assert lora.vllm_env() == {}


def test_enabled_gives_vllm_flags_and_the_runtime_api():
    lora = LoraSettings(enabled=True, max_loras=3, max_lora_rank=8)
    argv = lora.to_vllm_args(BASE)
    assert argv[0] == "--enable-lora"
    assert _flag(argv, "--max-loras") == "3"
    assert _flag(argv, "--max-lora-rank") == "8"
    assert "--max-cpu-loras" not in argv  # vLLM's default: max_loras
    assert "--lora-modules" not in argv
    assert lora.vllm_env() == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"}
    assert _flag(LoraSettings(enabled=True, max_cpu_loras=5).to_vllm_args(BASE), "--max-cpu-loras") == "5"


def test_static_adapters_follow_one_flag_in_json_form_with_the_base_model(tmp_path):
    folder = make_adapter(tmp_path / "json-mode")
    lora = LoraSettings(enabled=True, max_cpu_loras=2, adapters={"json-mode": folder, "sql": "org/sql-lora"})
    argv = lora.to_vllm_args(BASE)
    assert argv.count("--lora-modules") == 1  # vLLM's parser keeps only the last occurrence
    modules = [json.loads(a) for a in argv[argv.index("--lora-modules") + 1:]]
    assert modules == [
        {"name": "json-mode", "path": folder, "base_model_name": BASE},
        {"name": "sql", "path": "org/sql-lora", "base_model_name": BASE},
    ]


def test_an_adapter_named_like_the_base_model_is_refused():
    lora = LoraSettings(enabled=True, adapters={BASE: "org/x"})
    with pytest.raises(ConfigError, match=f"'lora.adapters' has adapter '{BASE}'.*rename"):
        lora.to_vllm_args(BASE)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_loras": 4, "max_cpu_loras": 2}, r"max_cpu_loras \(2\) cannot be below max_loras \(4\)"),
        ({"adapters": {"a": "org/a"}}, "adapters are listed but enabled is false"),
        ({"enabled": True, "adapters": {"a": "org/a", "b": "org/b", "c": "org/c"}}, "3 adapters listed but only 2 fit"),
        ({"max_lora_rank": 12}, "max_lora_rank"),
        ({"max_loras": 0}, "max_loras"),
        ({"enabled": True, "adapters": {"a,b": "org/a"}}, "adapter name 'a,b' is not valid"),
        ({"max_adapters": 2}, "max_adapters"),
    ],
)
def test_invalid_settings_say_why(fields, message):
    with pytest.raises(ValidationError, match=message):
        LoraSettings(**fields)


@pytest.mark.parametrize("name", ["json-mode", "sql_v2", "org/adapter", "a:1", "A.b"])
def test_valid_adapter_names(name):
    assert check_adapter_name(name) == name


@pytest.mark.parametrize("name", ["", "a,b", "a b", "a=b", "-a", "x" * 129])
def test_invalid_adapter_names(name):
    with pytest.raises(ValueError, match="is not valid"):
        check_adapter_name(name)


def test_sources_local_folders_become_absolute_hub_ids_stay(tmp_path, monkeypatch):
    make_adapter(tmp_path / "ad")
    monkeypatch.chdir(tmp_path)
    assert resolve_adapter_source("ad") == str(tmp_path / "ad")
    assert resolve_adapter_source("./ad") == str(tmp_path / "ad")
    assert resolve_adapter_source("ad", base_dir=tmp_path) == str(tmp_path / "ad")
    assert resolve_adapter_source("org/some-lora") == "org/some-lora"


@pytest.mark.parametrize(("source", "message"), [
    ("./missing", "does not exist"),
    ("not-a-hub-id", "does not exist"),
    ("empty", "has no adapter_config.json"),
])
def test_bad_sources_say_what_is_expected(tmp_path, monkeypatch, source, message):
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"{message}; expected a PEFT LoRA folder"):
        resolve_adapter_source(source)


def test_stack_config_lora_section(tmp_path):
    folder = make_adapter(tmp_path / "a")
    path = tmp_path / "stack.yaml"
    path.write_text(f"lora: {{enabled: true, max_loras: 1, max_cpu_loras: 2, adapters: {{a: {folder}}}}}\n")
    config = load_config(path)
    assert config.lora.adapters == {"a": folder}
    path.write_text("lora: {enabled: true, max_lora: 2}\n")
    with pytest.raises(ConfigError, match="unknown key 'lora.max_lora'"):
        load_config(path)
    path.write_text("lora: {enabled: true, adapters: {a: /nowhere}}\n")
    with pytest.raises(ConfigError, match="'lora.adapters'.*/nowhere does not exist"):
        load_config(path)
