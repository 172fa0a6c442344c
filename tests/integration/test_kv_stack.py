"""Precise prefix routing on a real stack: replicas publish their KV events, the picker follows
them; a prompt's later requests go to the replica that cached its prefix, and the picker's
predicted cached tokens equal what vLLM reports (usage.prompt_tokens_details.cached_tokens); a
replica that restarts loses its blocks in the picker too. Two pickers (``gateway.pickers: 2``) follow
the same events into the same index, and one SIGKILLed under 4 clients' steady load fails no request."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from stackutil import RunningStack, detached_stack, wait_until

from inferstack.process import free_port_block

pytestmark = pytest.mark.integration

PREFIX = "You are checking a warehouse list. " + " ".join(f"Shelf {i} holds {i % 5} red boxes." for i in range(50))


@pytest.fixture(scope="module")
def kv_stack(engine_python, tmp_path_factory) -> Iterator[RunningStack]:
    with detached_stack(tmp_path_factory.mktemp("kv"), {
        "replicas": 2,
        "speculative": {"method": "none"},
        "engine": {"base_port": free_port_block(2, start=19500), "max_model_len": 1024, "cores_per_replica": 1},
        "batch": {"enabled": False},
        "gateway": {"pickers": 2, "epp": {"kv_events": {"enabled": True},
                            "scheduler": {"scorers": [{"type": "precise-prefix", "weight": 2}, {"type": "no-hit-lru"},
                                                      {"type": "queue"}, {"type": "kv-cache"}]}}},
    }) as stack:
        yield stack


def _ask(stack: RunningStack, question: str) -> tuple[int, int]:
    """(the picker's predicted cached tokens, vLLM's cached tokens) of one request through the gateway."""
    r = httpx.post(f"{stack.base_url}/chat/completions", timeout=120, json={
        "model": stack.served_model, "max_tokens": 2, "temperature": 0,
        "messages": [{"role": "user", "content": f"{PREFIX} {question}"}]})
    assert r.status_code == 200, r.text
    return int(r.headers["x-inferstack-predicted-cached-tokens"]), r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]


def _blocks(stack: RunningStack, picker: int = 0) -> dict[str, float]:
    port = stack.status()["gateway"]["pickers"][picker]["metrics_port"]
    page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {s.labels["endpoint"]: s.value for f in text_string_to_metric_families(page) for s in f.samples
            if s.name == "inferstack_epp_kv_blocks"}


def test_requests_follow_the_cached_prefix_and_the_prediction_is_what_vllm_reports(kv_stack):
    assert _ask(kv_stack, "How many shelves?") == (0, 0)  # nothing cached anywhere yet
    wait_until(lambda: max(_blocks(kv_stack).values(), default=0) > 0, timeout_s=10,
               what="the replica's KV events to reach the picker")
    holder, held = max(_blocks(kv_stack).items(), key=lambda kv: kv[1])
    for question in ("Which shelf has most boxes?", "Count the red boxes.", "Name shelf 7."):
        predicted, cached = _ask(kv_stack, question)
        assert cached > 0 and predicted == cached, (predicted, cached)  # sent to the prefix's replica, to the block

    # the replica that holds the prefix restarts: the picker forgets its blocks
    replica = next(r for r in kv_stack.status()["replicas"] if r["url"].endswith(":" + holder.rsplit(":", 1)[1]))
    os.kill(replica["pid"], signal.SIGKILL)

    def restarted() -> bool:
        replicas = kv_stack.status()["replicas"]
        mine = next(r for r in replicas if r["name"] == replica["name"])
        return mine["restarts"] == 1 and all(r["state"] == "ready" for r in replicas)

    wait_until(restarted, timeout_s=180, what="the killed replica to be restarted and ready")
    wait_until(lambda: _blocks(kv_stack).get(holder, 0) < held, timeout_s=15, what="the picker to drop its blocks")
    predicted, cached = _ask(kv_stack, "How many shelves again?")
    assert predicted == cached  # wherever it went, the prediction still matches vLLM
    tally = {o: sum(_predictions(kv_stack, p).get(o, 0) for p in (0, 1)) for o in ("exact", "over", "under")}
    assert tally["exact"] >= 5 and tally["over"] == tally["under"] == 0, tally  # the pickers' own tally agrees


def _predictions(stack: RunningStack, picker: int) -> dict[str, float]:
    port = stack.status()["gateway"]["pickers"][picker]["metrics_port"]
    page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(page) for s in f.samples
            if s.name == "inferstack_epp_kv_predictions_total"}


def test_both_pickers_hold_the_same_index_and_one_killed_under_load_fails_no_request(kv_stack):
    wait_until(lambda: _blocks(kv_stack, 0) == _blocks(kv_stack, 1) and _blocks(kv_stack, 0), timeout_s=15,
               what="both pickers to hold the same blocks")
    statuses: list[int] = []
    stop = threading.Event()

    def client(i: int) -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                r = http.post(f"{kv_stack.base_url}/chat/completions", json={
                    "model": kv_stack.served_model, "max_tokens": 8, "temperature": 0,
                    "messages": [{"role": "user", "content": f"{PREFIX} Question {i}-{len(statuses)}?"}]})
                statuses.append(r.status_code)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(statuses) >= 8, timeout_s=120, what="steady load")
        victim = kv_stack.status()["gateway"]["pickers"][1]
        os.kill(victim["pid"], signal.SIGKILL)
        done = len(statuses)
        wait_until(lambda: len(statuses) >= done + 16, timeout_s=180, what="answers after the kill")
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert statuses and all(s == 200 for s in statuses), statuses
    wait_until(lambda: kv_stack.status()["gateway"]["pickers"][1]["restarts"] == 1, timeout_s=30,
               what="the supervisor to restart the picker")
