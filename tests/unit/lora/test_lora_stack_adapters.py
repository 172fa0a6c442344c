"""The stack's declared adapter set (``stack.adapters.StackAdapters``) against two fake replicas:
all-or-nothing loads, slot limits, unload, hand edits of the file, re-sync of a restarted replica."""

import threading

import pytest
from fake_vllm import FakeVllm, make_adapter

from inferstack.errors import AdapterLoadError, AdapterNotFound, ConfigError
from inferstack.lora import LoraClient, LoraSettings, load_syncer_config
from inferstack.stack.adapters import StackAdapters

BASE = "smollm2-135m-instruct"


@pytest.fixture
def pair():
    with FakeVllm(BASE, max_lora_rank=8) as a, FakeVllm(BASE, max_lora_rank=8) as b:
        yield a, b


@pytest.fixture
def stack_adapters(tmp_path, client):
    return StackAdapters(tmp_path / "adapters.yaml", BASE, LoraSettings(enabled=True, max_loras=2), client)


def test_load_reaches_every_replica_and_is_declared_in_the_syncer_format(pair, stack_adapters, tmp_path):
    a, b = pair
    source = make_adapter(tmp_path / "pirate")
    message = stack_adapters.load("pirate", source, [a.url, b.url])
    assert message.startswith("adapter 'pirate' loaded on 2 replica(s)")
    assert a.adapters == {"pirate": source} and b.adapters == {"pirate": source}
    declared = load_syncer_config(stack_adapters.path, base_model=BASE)
    assert dict(declared.ensure_exist) == {"pirate": source}


def test_a_load_that_fails_on_one_replica_is_undone_on_the_others(pair, tmp_path, client):
    a, b = pair
    b.max_lora_rank = 4  # the second replica refuses rank 8 (vLLM: 500, rank above max_lora_rank)
    adapters = StackAdapters(tmp_path / "adapters.yaml", BASE, LoraSettings(enabled=True), client)
    with pytest.raises(AdapterLoadError, match="greater than max_lora_rank"):
        adapters.load("pirate", make_adapter(tmp_path / "pirate"), [a.url, b.url])
    assert a.adapters == {} and b.adapters == {}
    assert dict(adapters.declared().ensure_exist) == {}


def test_missing_folder_and_slot_limit_are_clear_errors(pair, stack_adapters, tmp_path):
    a, _ = pair
    with pytest.raises(ConfigError, match="adapter 'ghost'"):
        stack_adapters.load("ghost", str(tmp_path / "nope"), [a.url])
    stack_adapters.load("one", make_adapter(tmp_path / "one"), [a.url])
    stack_adapters.load("two", make_adapter(tmp_path / "two"), [a.url])
    with pytest.raises(ConfigError, match=r"at most 2 adapters \(lora.max_cpu_loras\) and 2 are declared"):
        stack_adapters.load("three", make_adapter(tmp_path / "three"), [a.url])
    with pytest.raises(ConfigError, match="base model's served name"):
        stack_adapters.load(BASE, make_adapter(tmp_path / "b"), [a.url])
    assert set(a.adapters) == {"one", "two"}


def test_unload_everywhere_and_a_restarted_replica_is_synced_back(pair, stack_adapters, tmp_path):
    a, b = pair
    stack_adapters.load("pirate", make_adapter(tmp_path / "pirate"), [a.url, b.url])
    b.restart()  # a restarted vLLM has lost its runtime adapters
    assert b.adapters == {}
    assert [o.ok for o in stack_adapters.sync(b.url)] == [True]
    assert "pirate" in b.adapters
    stack_adapters.unload("pirate", [a.url, b.url])
    assert a.adapters == {} and b.adapters == {}
    assert stack_adapters.declared().ensure_not_exist == frozenset({"pirate"})
    with pytest.raises(ConfigError, match="adapter 'pirate' is not loaded at runtime"):
        stack_adapters.unload("pirate", [a.url])


def test_a_hand_edit_of_the_file_is_applied_and_a_broken_one_ignored(pair, stack_adapters, tmp_path):
    a, _ = pair
    source = make_adapter(tmp_path / "hand")
    stack_adapters.path.write_text(f"vLLMLoRAConfig:\n  ensureExist:\n    models:\n    - id: hand\n      source: {source}\n")
    assert stack_adapters.changed()
    stack_adapters.sync(a.url)
    assert a.adapters == {"hand": source}
    stack_adapters.path.write_text("vLLMLoRAConfig: {ensureExists: {}}\n")  # misspelt: invalid
    assert dict(stack_adapters.declared().ensure_exist) == {"hand": source}


def test_unloading_an_adapter_a_replica_lost_is_not_an_error(pair, stack_adapters, tmp_path):
    a, b = pair
    stack_adapters.load("pirate", make_adapter(tmp_path / "pirate"), [a.url, b.url])
    b.adapters.clear()
    stack_adapters.unload("pirate", [a.url, b.url])
    with LoraClient() as c, pytest.raises(AdapterNotFound):
        c.unload(b.url, "pirate")


def test_an_unload_during_a_sync_waits_for_it_and_is_not_undone(pair, stack_adapters, tmp_path):
    # The periodic sync read the declared set (pirate in it), then listed the replica; an unload
    # finishing in between must not be undone by the sync's plan (it would load pirate again).
    a, b = pair
    stack_adapters.load("pirate", make_adapter(tmp_path / "pirate"), [a.url, b.url])
    a.hold_listing()
    syncing = threading.Thread(target=stack_adapters.sync, args=(a.url,))
    syncing.start()
    assert a.listing_arrived.wait(5)
    unloading = threading.Thread(target=stack_adapters.unload, args=("pirate", [a.url, b.url]))
    unloading.start()
    unloading.join(0.5)
    assert unloading.is_alive()  # it waits for the sync in flight
    a.listing_gate.set()
    syncing.join(5)
    unloading.join(5)
    assert a.adapters == {} and b.adapters == {}
    assert stack_adapters.sync(a.url) == []


def test_loading_a_name_a_replica_holds_undeclared_swaps_it_in(pair, stack_adapters, tmp_path):
    a, b = pair
    by_hand = make_adapter(tmp_path / "by-hand")
    with LoraClient() as direct:
        direct.load(a.url, "pirate", by_hand)  # on one replica, behind the stack's back
    source = make_adapter(tmp_path / "pirate")
    stack_adapters.load("pirate", source, [a.url, b.url])
    assert a.adapters == {"pirate": source} and b.adapters == {"pirate": source}
    assert dict(stack_adapters.declared().ensure_exist) == {"pirate": source}


def test_an_unload_a_replica_misses_says_so_and_the_sync_finishes_it(pair, stack_adapters, tmp_path):
    a, b = pair
    stack_adapters.load("pirate", make_adapter(tmp_path / "pirate"), [a.url, b.url])
    b.runtime_enabled = False  # its unload route answers FastAPI's plain 404 for a while
    message = stack_adapters.unload("pirate", [a.url, b.url])
    assert message.startswith("adapter 'pirate' unloaded from 1 of 2 replica(s) and declared absent"), message
    assert b.url in message and a.adapters == {} and b.adapters != {}
    b.runtime_enabled = True
    assert [(o.action.kind, o.ok) for o in stack_adapters.sync(b.url)] == [("unload", True)]
    assert b.adapters == {}
