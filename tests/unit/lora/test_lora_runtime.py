import socket

import pytest
from fake_vllm import FakeVllm, make_adapter

from inferstack.errors import (
    AdapterAlreadyLoaded,
    AdapterError,
    AdapterLoadError,
    AdapterNotFound,
    LoraUnavailable,
)
from inferstack.lora import Adapter

BASE = "smollm2-135m-instruct"


def test_load_list_unload(vllm, client, tmp_path):
    folder = make_adapter(tmp_path / "a")
    assert client.list_adapters(vllm.url) == []  # the base model is no adapter
    client.load(vllm.url, "json-mode", folder)
    assert client.list_adapters(vllm.url) == [Adapter("json-mode", folder, BASE)]
    assert vllm.calls[-1] == ("/v1/load_lora_adapter",
                              {"lora_name": "json-mode", "lora_path": folder, "load_inplace": False})
    client.unload(vllm.url, "json-mode")
    assert client.list_adapters(vllm.url) == []


def test_loading_a_loaded_name_fails_unless_replacing(vllm, client, tmp_path):
    client.load(vllm.url, "a", make_adapter(tmp_path / "v1"))
    with pytest.raises(AdapterAlreadyLoaded, match="adapter 'a' is already loaded"):
        client.load(vllm.url, "a", make_adapter(tmp_path / "v2"))
    client.load(vllm.url, "a", str(tmp_path / "v2"), replace=True)
    assert client.list_adapters(vllm.url)[0].source == str(tmp_path / "v2")


def test_missing_folder_is_not_found_and_names_the_source(vllm, client, tmp_path):
    with pytest.raises(AdapterNotFound) as err:
        client.load(vllm.url, "a", str(tmp_path / "nowhere"))
    # vLLM writes <path> for any path; our message names the source we sent.
    assert f"from '{tmp_path / 'nowhere'}': no adapter there" in str(err.value)
    assert vllm.url in str(err.value)


def test_rank_above_max_is_refused_with_vllms_reason(vllm, client, tmp_path):
    with pytest.raises(AdapterLoadError) as err:
        client.load(vllm.url, "big", make_adapter(tmp_path / "big", rank=16))
    assert "refused (500): LoRA rank 16 is greater than max_lora_rank 8." in str(err.value)
    assert "Call to add_lora" not in str(err.value)
    assert not isinstance(err.value, AdapterAlreadyLoaded)


def test_name_of_the_base_model_is_refused(vllm, client, tmp_path):
    with pytest.raises(AdapterLoadError, match="conflicts with a served base model"):
        client.load(vllm.url, BASE, make_adapter(tmp_path / "a"))


def test_invalid_name_is_refused_before_any_call(vllm, client, tmp_path):
    with pytest.raises(AdapterLoadError, match="'a,b' is not valid"):
        client.load(vllm.url, "a,b", make_adapter(tmp_path / "a"))
    assert vllm.calls == []


def test_unloading_an_unknown_adapter_is_not_found(vllm, client):
    with pytest.raises(AdapterNotFound, match="adapter 'ghost' is not loaded"):
        client.unload(vllm.url, "ghost")


def test_replica_without_runtime_lora_says_how_to_enable_it(client, tmp_path):
    with FakeVllm(BASE, runtime_enabled=False) as vllm:
        for call in (lambda: client.load(vllm.url, "a", make_adapter(tmp_path / "a")),
                     lambda: client.unload(vllm.url, "a")):
            with pytest.raises(LoraUnavailable, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
                call()


def test_unreachable_or_unready_replica_is_unavailable(vllm, client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(LoraUnavailable, match=f"replica {closed}: cannot list adapters: ConnectError"):
        client.list_adapters(closed)
    with pytest.raises(LoraUnavailable, match="cannot load adapter 'a'"):
        client.load(closed, "a", "/x")
    vllm.models_status = 503
    with pytest.raises(LoraUnavailable, match="/v1/models answered 503"):
        client.list_adapters(vllm.url)


def test_every_adapter_error_is_an_adapter_error():
    for cls in (AdapterNotFound, AdapterLoadError, AdapterAlreadyLoaded, LoraUnavailable):
        assert issubclass(cls, AdapterError)
