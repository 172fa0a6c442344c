import textwrap

import pytest
from fake_vllm import make_adapter

from inferstack.errors import ConfigError
from inferstack.lora import DesiredAdapters, load_syncer_config

# The ConfigMap body of the GIE dynamic-lora-sidecar's own example (deployment.yaml, v1.4).
UPSTREAM = """\
vLLMLoRAConfig:
  name: sql-loras-llama
  defaultBaseModel: meta-llama/Llama-2-7b-hf
  ensureExist:
    models:
    - id: sql-lora-v1
      source: yard1/llama-2-7b-sql-lora-test
    - id: sql-lora-v3
      source: yard1/llama-2-7b-sql-lora-test
  ensureNotExist:
    models:
    - id: sql-lora-v2
      source: yard1/llama-2-7b-sql-lora-test
"""


def _load(tmp_path, text, **kwargs):
    path = tmp_path / "lora.yaml"
    path.write_text(textwrap.dedent(text))
    return load_syncer_config(path, **kwargs)


def test_the_sidecars_own_example_parses(tmp_path):
    desired = _load(tmp_path, UPSTREAM, base_model="meta-llama/Llama-2-7b-hf")
    assert desired == DesiredAdapters(
        {"sql-lora-v1": "yard1/llama-2-7b-sql-lora-test", "sql-lora-v3": "yard1/llama-2-7b-sql-lora-test"},
        frozenset({"sql-lora-v2"}),
    )


def test_local_folders_are_taken_from_the_files_folder_and_lists_are_optional(tmp_path):
    make_adapter(tmp_path / "adapters" / "json-mode")
    desired = _load(tmp_path, """\
        vLLMLoRAConfig:
          host: localhost
          port: 8000
          ensureExist:
            models:
            - {id: json-mode, source: adapters/json-mode, base-model: smollm2-135m-instruct}
        """, base_model="smollm2-135m-instruct")
    assert desired.ensure_exist == {"json-mode": str(tmp_path / "adapters" / "json-mode")}
    assert desired.ensure_not_exist == frozenset()
    assert _load(tmp_path, "vLLMLoRAConfig: {name: empty}\n") == DesiredAdapters({}, frozenset())


def test_ensure_not_exist_needs_no_source(tmp_path):
    assert _load(tmp_path, "vLLMLoRAConfig: {ensureNotExist: {models: [{id: old}]}}\n").ensure_not_exist == {"old"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\n", "'vLLMLoRAConfig' Field required"),
        ("vLLMLoRAConfig: {ensureExist: {models: [{source: org/a}]}}\n",
         "'vLLMLoRAConfig.ensureExist.models.0.id' Field required"),
        ("vLLMLoRAConfig: {ensureExist: {models: [{id: a}]}}\n",
         "'vLLMLoRAConfig.ensureExist.models.0.source' Field required"),
        ("vLLMLoRAConfig: {ensureExist: {models: {id: a}}}\n", "'vLLMLoRAConfig.ensureExist.models'"),
        ("vLLMLoRAConfig: {ensureExists: {models: []}}\n", "unknown key 'vLLMLoRAConfig.ensureExists'"),
        ("vLLMLoRAConfig: {ensureExist: {models: [{id: a, source: org/a, basemodel: b}]}}\n",
         "unknown key 'vLLMLoRAConfig.ensureExist.models.0.basemodel'"),
        ("vLLMLoRAConfig: {ensureExist: {models: [{id: a, source: org/a}]}, ensureNotExist: {models: [{id: a}]}}\n",
         "'vLLMLoRAConfig.ensureNotExist.models.0.id' has value 'a', already listed in ensureExist"),
        ("vLLMLoRAConfig: {ensureExist: {models: [{id: a, source: org/a}, {id: a, source: org/b}]}}\n",
         "'vLLMLoRAConfig.ensureExist.models.1.id' has value 'a', already listed in ensureExist"),
        ("vLLMLoRAConfig: {ensureExist: {models: [{id: 'a b', source: org/a}]}}\n",
         "'vLLMLoRAConfig.ensureExist.models.0.id' adapter name 'a b' is not valid"),
        ("vLLMLoRAConfig: {ensureExist: {models: [{id: a, source: ./nowhere}]}}\n",
         "'vLLMLoRAConfig.ensureExist.models.0.source' has value './nowhere': folder .* does not exist"),
        ("vLLMLoRAConfig: {defaultBaseModel: other, ensureExist: {models: [{id: a, source: org/a}]}}\n",
         "'vLLMLoRAConfig.ensureExist.models.0' has defaultBaseModel 'other'; the replicas serve 'base'"),
        ("vLLMLoRAConfig: {ensureExist: {models: [{id: a, source: org/a, base-model: other}]}}\n",
         "'vLLMLoRAConfig.ensureExist.models.0' has base-model 'other'"),
        ("- a\n", "must be a mapping"),
    ],
)
def test_invalid_configs_name_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as err:
        _load(tmp_path, text, base_model="base")
    assert str(tmp_path / "lora.yaml") in str(err.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read LoRA syncer config"):
        load_syncer_config(tmp_path / "nope.yaml")
