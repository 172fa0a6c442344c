"""`inferstack up` with the autoscaler (real vLLM, real Envoy): a burst through the gateway scales
1 -> 2 replicas, and after a shortened scale-down stabilization window back to 1, the scaled-in
replica drained first: no request fails. Each decision is an event with the HPA's reason."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from stackutil import BackgroundLoad, RunningStack, detached_stack, generated_tokens, wait_until

from inferstack.process import free_port_block, group_alive

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def autoscaled(engine_python, tmp_path_factory) -> Iterator[RunningStack]:
    up_output: list[str] = []
    with detached_stack(tmp_path_factory.mktemp("autoscale-state"), {
        "replicas": 1,
        "speculative": {"method": "none"},
        # 2 sequences a batch: a burst of 8 clients queues in vLLM (the scaling metric)
        # one core a replica: the added replica gets a core of its own
        "engine": {"base_port": free_port_block(4, start=19400), "max_model_len": 1024, "max_num_seqs": 2,
                   "cores_per_replica": 1},
        "batch": {"enabled": False},
        "autoscaling": {"min_replicas": 1, "max_replicas": 2, "metric": "waiting", "target": 2,
                        "sync_period_s": 1,
                        "behavior": {"scale_down": {"stabilization_window_s": 10}}},
    }, up_output) as stack:
        assert "autoscaling 1..2 replicas on waiting:2" in up_output[0]
        yield stack


def test_a_burst_scales_out_and_idle_scales_back_in_without_a_failed_request(autoscaled):
    start = autoscaled.state()
    assert start.desired_replicas == 1 and start.autoscaling and start.autoscaling.policy == "waiting:2"
    with BackgroundLoad(autoscaled.base_url, autoscaled.served_model, workers=8, max_tokens=48) as load:
        t0 = time.monotonic()
        scaled = autoscaled.wait_for(lambda d: d.desired_replicas == 2, 240, "scale-out decided")
        decided_after = time.monotonic() - t0
        served = autoscaled.wait_for(lambda d: d.ready_replicas == 2, 600, "2 replicas ready")
        ready_after = time.monotonic() - t0
        added = next(r for r in served.replicas if r.name not in {x.name for x in start.replicas})
        at_ready = generated_tokens(added.url)
        wait_until(lambda: generated_tokens(added.url) > at_ready + 96, timeout_s=120,
                   what="the new replica to take part of the burst", interval_s=0.5)
    scale_out = next(e.message for e in scaled.events if e.kind == "autoscaler")
    assert scale_out.startswith("scaled 1 -> 2: vllm:num_requests_waiting avg"), scale_out
    assert "> target 2" in scale_out
    back = autoscaled.wait_for(lambda d: d.desired_replicas == 1 and len(d.replicas) == 1, 240, "scale-in")
    scale_in = [e.message for e in back.events if e.kind == "autoscaler"][-1]
    assert scale_in.startswith("scaled 2 -> 1"), scale_in
    gone = next(r for r in served.replicas if r.name not in {x.name for x in back.replicas})
    assert gone.pid and not group_alive(gone.pid)
    assert not load.failures, f"{len(load.failures)} failed requests: {load.failures[:3]}"
    print(f"burst: scale-out decided after {decided_after:.1f}s, 2 ready after {ready_after:.1f}s; "
          f"{load.ok} requests, 0 failed; {scale_out!r}; then {scale_in!r}")
