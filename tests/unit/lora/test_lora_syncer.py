import pytest
from fake_vllm import FakeVllm, make_adapter

from inferstack.errors import AdapterLoadError, AdapterNotFound, LoraUnavailable
from inferstack.lora import Action, DesiredAdapters, Outcome, plan_actions, reconcile

BASE = "smollm2-135m-instruct"


def _desired(exist=None, not_exist=()):
    return DesiredAdapters(dict(exist or {}), frozenset(not_exist))


@pytest.mark.parametrize(
    ("current", "desired", "actions"),
    [
        ({}, _desired(), []),
        ({}, _desired({"a": "/a", "b": "/b"}), [Action("load", "a", "/a"), Action("load", "b", "/b")]),
        ({"a": "/a"}, _desired({"a": "/a"}), []),
        ({"a": "/old"}, _desired({"a": "/a"}), [Action("reload", "a", "/a")]),
        ({"a": "/a", "b": "/b"}, _desired(not_exist={"b", "c"}), [Action("unload", "b")]),
        ({"static": "/s"}, _desired({"a": "/a"}), [Action("load", "a", "/a")]),  # others are left alone
        ({"z": "/z"}, _desired({"a": "/a"}, {"z"}), [Action("unload", "z"), Action("load", "a", "/a")]),
    ],
)
def test_plan(current, desired, actions):
    assert plan_actions(current, desired) == actions


def test_reconcile_reaches_the_set_and_is_idempotent(vllm, client, tmp_path):
    a, b = make_adapter(tmp_path / "a"), make_adapter(tmp_path / "b")
    vllm.adapters.update({"old": b, "static": b})
    desired = _desired({"a": a, "b": b}, {"old"})
    outcomes = reconcile(vllm.url, desired, client)
    assert outcomes == [Outcome(Action("unload", "old")), Outcome(Action("load", "a", a)),
                        Outcome(Action("load", "b", b))]
    assert vllm.adapters == {"static": b, "a": a, "b": b}
    calls = len(vllm.calls)
    assert reconcile(vllm.url, desired, client) == []
    assert len(vllm.calls) == calls  # nothing sent the second time


def test_a_restarted_replica_gets_its_adapters_again(vllm, client, tmp_path):
    desired = _desired({"a": make_adapter(tmp_path / "a")})
    reconcile(vllm.url, desired, client)
    vllm.restart()
    assert [o.action.kind for o in reconcile(vllm.url, desired, client)] == ["load"]
    assert set(vllm.adapters) == {"a"}


def test_a_new_source_is_swapped_in_place(vllm, client, tmp_path):
    reconcile(vllm.url, _desired({"a": make_adapter(tmp_path / "v1")}), client)
    v2 = make_adapter(tmp_path / "v2")
    assert reconcile(vllm.url, _desired({"a": v2}), client) == [Outcome(Action("reload", "a", v2))]
    assert vllm.calls[-1][1]["load_inplace"] is True
    assert vllm.adapters == {"a": v2}


def test_one_bad_adapter_does_not_stop_the_others(vllm, client, tmp_path):
    big, good = make_adapter(tmp_path / "big", rank=16), make_adapter(tmp_path / "good")
    outcomes = reconcile(vllm.url, _desired({"big": big, "gone": str(tmp_path / "gone"), "good": good}), client)
    assert [(o.action.name, o.ok) for o in outcomes] == [("big", False), ("gone", False), ("good", True)]
    assert isinstance(outcomes[0].error, AdapterLoadError)
    assert isinstance(outcomes[1].error, AdapterNotFound)
    assert set(vllm.adapters) == {"good"}


def test_races_with_another_loader_count_as_done(vllm, client, tmp_path):
    a = make_adapter(tmp_path / "a")
    vllm.adapters["x"] = a
    original_load, original_unload = vllm.load, vllm.unload

    def load_twice(body):  # another loader wins between our listing and our call
        original_load(body)
        return original_load(body)

    def unload_twice(body):
        original_unload(body)
        return original_unload(body)

    vllm.load, vllm.unload = load_twice, unload_twice
    outcomes = reconcile(vllm.url, _desired({"a": a}, {"x"}), client)
    assert [o.ok for o in outcomes] == [True, True]


def test_an_unreachable_replica_raises_for_the_caller_to_retry(client):
    with FakeVllm(BASE) as vllm:
        url = vllm.url
    with pytest.raises(LoraUnavailable):
        reconcile(url, _desired({"a": "/a"}), client)
