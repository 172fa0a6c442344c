"""`inferstack adapters train` for real (PEFT in the engine environment, 2 tiny steps, ~15-25 s),
and the bundled adapter `make setup` prepared. Whether the adapter changes greedy output through
vLLM is checked by the LoRA serving tests; here only the files and the recorded greedy check."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from stackutil import run_cli

from inferstack.envs.environments import ENGINE_ENV, LORA_TRAIN_ADDON, addon_python
from inferstack.errors import SetupError
from inferstack.lora import BUNDLED_ADAPTER, bundled_adapter
from inferstack.lora.train_lora import TARGET_MODULES
from inferstack.models.bundled import BUNDLED

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trainer() -> Path:
    try:
        python = addon_python(ENGINE_ENV, LORA_TRAIN_ADDON)
    except SetupError as exc:
        pytest.fail(f"setup failure: {exc}", pytrace=False)
    if not BUNDLED.is_prepared():
        pytest.fail("setup failure: the bundled model is not prepared; run `make setup`", pytrace=False)
    return python


def _tensor_names(safetensors: Path) -> list[str]:
    with safetensors.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return [name for name in header if name != "__metadata__"]


def _assert_vllm_loadable(folder: Path, rank: int) -> None:
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == rank and config["lora_alpha"] == 2 * rank
    assert sorted(config["target_modules"]) == sorted(TARGET_MODULES)
    # what vLLM's LoRA loader refuses
    assert config["bias"] == "none" and not config["use_dora"] and not config["modules_to_save"]
    names = _tensor_names(folder / "adapter_model.safetensors")
    assert len(names) == 30 * len(TARGET_MODULES) * 2  # lora_A and lora_B per layer and module
    assert all(".lora_A." in n or ".lora_B." in n for n in names)
    assert not any("embed" in n or "lm_head" in n for n in names)


def test_train_a_few_steps_writes_a_peft_adapter_with_progress(trainer, tmp_path):
    out = tmp_path / "tiny"
    proc = run_cli("adapters", "train", "--output", str(out), "--steps", "2", "--batch-size", "2",
                   "--no-check", timeout=180)
    assert "step 1/2 loss" in proc.stdout and "step 2/2 loss" in proc.stdout
    assert f"adapter: {out}" in proc.stdout
    _assert_vllm_loadable(out, rank=8)
    meta = json.loads((out / "inferstack-adapter.json").read_text())
    assert len(meta["losses"]) == 2 and meta["reply_prefix"] == "ARR!"
    assert meta["recipe"]["steps"] == 2 and meta["recipe"]["batch_size"] == 2
    assert (out / "README.md").read_text().startswith("# LoRA adapter")
    assert not out.with_name("tiny.tmp").exists()


def test_the_bundled_adapter_is_prepared_and_passed_its_greedy_check():
    try:
        folder = bundled_adapter()
    except SetupError as exc:
        pytest.fail(f"setup failure: {exc}", pytrace=False)
    _assert_vllm_loadable(folder, rank=8)
    meta = json.loads((folder / "inferstack-adapter.json").read_text())
    assert meta["reply_prefix"] == BUNDLED_ADAPTER.reply_prefix == "ARR!"
    assert meta["check"], "the bundled adapter was trained without its greedy check"
    for check in meta["check"]:  # transformers + peft, greedy, prompts outside the dataset
        assert check["adapter"].startswith("ARR!"), check
        assert not check["base"].startswith("ARR!"), check
