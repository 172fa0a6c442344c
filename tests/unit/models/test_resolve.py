import pytest

from inferstack.errors import ModelNotFoundError
from inferstack.models import bundled
from inferstack.models.resolve import resolve_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERSTACK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _prepare_fake_bundled(cache):
    folder = bundled.BUNDLED.folder
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_text("{}")
    return folder


def test_bundled_name_resolves_to_the_prepared_folder(cache):
    folder = _prepare_fake_bundled(cache)
    for ref in (None, "bundled", "smollm2-135m-instruct"):
        model = resolve_model(ref)
        assert model.source == str(folder)
        assert model.served_name == "smollm2-135m-instruct"
        assert model.kind == "bundled"


def test_bundled_not_prepared_says_how_to_prepare(cache):
    with pytest.raises(ModelNotFoundError, match="make setup"):
        resolve_model("smollm2-135m-instruct")


def test_local_folder(tmp_path, cache):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    model = resolve_model(str(folder))
    assert model.kind == "local" and model.served_name == "my-model"
    assert resolve_model(str(folder), "alias").served_name == "alias"


def test_missing_local_folder(tmp_path, cache):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "absent"))


def test_folder_without_config(tmp_path, cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_hub_id_is_passed_through(cache):
    model = resolve_model("google/gemma-3-1b-it")
    assert (model.source, model.served_name, model.kind) == ("google/gemma-3-1b-it", "google/gemma-3-1b-it", "hub")
    assert model.local_path is None


@pytest.mark.parametrize("ref", ["llama", "gpt 4", "a/b/c"])
def test_unknown_names_list_what_is_valid(ref, cache):
    with pytest.raises(ModelNotFoundError, match="is unknown.*smollm2-135m-instruct"):
        resolve_model(ref)
