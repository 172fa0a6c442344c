"""A stack that changes shape while it serves (real vLLM, real Envoy, `inferstack` CLI). It starts
with no replica: the first request is held by the endpoint picker while one starts; then `scale N`
out and in, a rolling reconfigure, and `scale 0` again. Requests run through the gateway all along;
none may fail. Three replica starts in all, each one a step a user takes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from stackutil import BackgroundLoad, RunningStack, chat, detached_stack, generated_tokens, run_cli, wait_until

from inferstack.process import free_port_block, group_alive

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def living(engine_python, tmp_path_factory) -> Iterator[RunningStack]:
    with detached_stack(tmp_path_factory.mktemp("living-state"), {
        "replicas": 0,  # none until the first request
        "speculative": {"method": "ngram"},
        # one core a replica: a replica started beside a busy one gets a core of its own
        "engine": {"base_port": free_port_block(4, start=19300), "max_model_len": 1024, "cores_per_replica": 1},
        "batch": {"enabled": False},
    }) as stack:
        yield stack


def _messages(data) -> list[str]:
    return [e.message for e in data.events]


def test_a_stack_at_zero_holds_the_first_request_until_a_replica_serves_it(living):
    idle = living.state()
    assert idle.desired_replicas == 0 and idle.replicas == []
    assert idle.gateway and idle.gateway.envoy.state == "running" and idle.gateway.epp.state == "running"
    t0 = time.monotonic()
    reply = chat(living.base_url, living.served_model, "What is the capital of France?", max_tokens=8)
    cold_start = time.monotonic() - t0
    assert reply["choices"][0]["message"]["content"]
    woke = living.state()
    assert woke.desired_replicas == 1 and woke.ready_replicas == 1
    assert any("held by the endpoint picker" in m for m in _messages(woke))
    assert cold_start > 5, "the first request was answered too fast to have waited for a replica"
    print(f"cold start (0 replicas -> first answer): {cold_start:.1f}s")
    # warm now: the next request does not wait
    t1 = time.monotonic()
    chat(living.base_url, living.served_model, "Name a colour.", max_tokens=4)
    assert time.monotonic() - t1 < cold_start / 3


def test_scale_out_and_in_by_hand_loses_no_request(living):
    with BackgroundLoad(living.base_url, living.served_model, workers=2) as load:
        out = run_cli("scale", "2", env=living.env, timeout=900)
        after_out = living.state()
        ok_at_two = load.ok
        added = after_out.replicas[-1]
        served_at_ready = generated_tokens(added.url)
        wait_until(lambda: generated_tokens(added.url) > served_at_ready + 40, timeout_s=120,
                   what="the added replica to take requests", interval_s=0.5)
        run_cli("scale", "1", env=living.env, timeout=900)
        after_in = living.state()
    assert "done in" in out.stdout and "2 replica(s) ready" in out.stdout
    assert after_out.desired_replicas == 2
    assert [r.state for r in after_out.replicas] == ["ready", "ready"]
    assert after_in.desired_replicas == 1 and len(after_in.replicas) == 1
    removed = next(r for r in after_out.replicas if r.name not in {x.name for x in after_in.replicas})
    assert removed.pid and not group_alive(removed.pid), "the scaled-in replica's processes are still running"
    assert any(f"replica {removed.name} removed" in m for m in _messages(after_in))
    assert not load.failures, f"{len(load.failures)} failed requests: {load.failures[:3]}"
    assert load.ok > ok_at_two > 0
    print(f"scale 1 -> 2 -> 1 with load: {load.ok} requests, 0 failed")


def test_rolling_reconfigure_loses_no_request(living):
    before = living.state()
    with BackgroundLoad(living.base_url, living.served_model, workers=2) as load:
        run_cli("reconfigure", "--spec-tokens", "3", env=living.env, timeout=900)
    after = living.state()
    old, new = before.replicas[0], after.replicas[0]
    assert after.generation == before.generation + 1
    assert len(after.replicas) == 1 and new.state == "ready"
    assert new.pid != old.pid and old.pid and not group_alive(old.pid)
    assert not load.failures, f"{len(load.failures)} failed requests: {load.failures[:3]}"
    assert load.ok > 0
    # the new replica runs the new setting
    argv = open(f"/proc/{new.pid}/cmdline").read().split("\0")
    assert '"num_speculative_tokens":3' in argv[argv.index("--speculative-config") + 1]


def test_reconfigure_of_the_model_is_refused_with_a_reason(living):
    bad = living.state_dir / "bad-reconfigure.yaml"
    bad.write_text("model: org/other\n")
    proc = run_cli("reconfigure", "--config", str(bad), env=living.env, check=False)
    assert proc.returncode == 2
    assert "cannot change model on a running stack" in proc.stderr


def test_scale_to_zero_stops_every_replica_and_keeps_the_gateway(living):
    before = living.state()
    assert before.replicas
    run_cli("scale", "0", env=living.env, timeout=300)
    idle = living.state()
    assert idle.desired_replicas == 0 and idle.replicas == []
    assert idle.gateway and idle.gateway.envoy.state == "running" and idle.gateway.epp.state == "running"
    assert not any(r.pid and group_alive(r.pid) for r in before.replicas)
    assert all(any(f"replica {r.name} removed" in m for m in _messages(idle)) for r in before.replicas)
