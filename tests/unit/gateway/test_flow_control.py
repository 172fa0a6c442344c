"""Flow control in the picker: while no endpoint has room, requests wait in the picker and leave by
priority band, then by fair turns between tenants, then in arrival order; a full queue or an
expired wait gets 429 with Retry-After; without saturation nothing waits."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.gateway.datastore import EndpointMetrics
from inferstack.gateway.envoy_config import build_envoy_config
from inferstack.gateway.epp import DESTINATION_HEADER, EndpointPicker
from inferstack.gateway.h2grpc import StreamContext
from inferstack.gateway.settings import EppSettings, FlowControlSettings, GatewaySettings, ObjectiveSettings
from inferstack.wire import FAIRNESS_ID_HEADER, OBJECTIVE_HEADER

from .test_epp import access_log_msg

A = "10.0.0.1:8000"


def flow_picker(per_endpoint: int = 2, **flow: object) -> EndpointPicker:
    """Flow control on one endpoint; no reserved room unless asked, so the order alone shows."""
    flow.setdefault("reserve_per_endpoint", 0)
    p = EndpointPicker(EppSettings(
        completion="access-log", objectives=[ObjectiveSettings(name="batch", priority=-1),
                                             ObjectiveSettings(name="urgent", priority=5)],
        flow_control=FlowControlSettings(enabled=True, max_requests_per_endpoint=per_endpoint, **flow)))  # type: ignore[arg-type]
    p.on_endpoints([A])
    scraped(p)
    return p


def scraped(p: EndpointPicker, **metrics: float) -> None:
    p.datastore.update_metrics(A, EndpointMetrics(scraped_at=time.monotonic(), **metrics))  # type: ignore[arg-type]


def send(p: EndpointPicker, rid: str, tenant: str = "", objective: str = "",
         max_tokens: int = 16) -> tuple[StreamContext, bytes]:
    """One request (headers, then its body) on its own stream; the answer to the body."""
    stream = StreamContext(1)
    hs = {"x-request-id": rid, ":path": "/v1/chat/completions"}
    if tenant:
        hs[FAIRNESS_ID_HEADER] = tenant
    if objective:
        hs[OBJECTIVE_HEADER] = objective
    hm = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in hs.items()])
    p.handle(pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hm)).SerializeToString(), stream)
    body = json.dumps({"model": "m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": rid}]})
    raw = pb.ProcessingRequest(request_body=pb.HttpBody(body=body.encode(), end_of_stream=True)).SerializeToString()
    return stream, p.handle(raw, stream)


def routed(raw: bytes) -> bool:
    r = pb.ProcessingResponse.FromString(raw)
    return any(h.header.key == DESTINATION_HEADER for h in r.request_body.response.header_mutation.set_headers)


def waits(raw: bytes) -> bool:
    return pb.ProcessingResponse.FromString(raw).WhichOneof("response") is None  # only the timer override


def rejected(raw: bytes) -> tuple[int, dict, dict[str, str]]:
    r = pb.ProcessingResponse.FromString(raw).immediate_response
    return (r.status.code, json.loads(r.body)["error"],
            {h.header.key: h.header.raw_value.decode() for h in r.headers.set_headers})


def end(p: EndpointPicker, *request_ids: str) -> None:
    """Envoy's access log reports these responses' ends."""
    p.access_log(access_log_msg(*request_ids))


async def settled() -> None:
    for _ in range(3):  # a decision reaches the stream's future through two done-callbacks
        await asyncio.sleep(0)


async def released_order(p: EndpointPicker, streams: dict[str, StreamContext], running: list[str]) -> list[str]:
    """End the running requests one at a time; the order in which the waiting ones get routed."""
    order: list[str] = []
    while running:
        end(p, running.pop(0))
        await settled()
        for rid, stream in list(streams.items()):
            if stream.later is not None and stream.later.done():
                assert routed(stream.later.result())
                order.append(rid)
                running.append(rid)
                del streams[rid]
    return order


def sample(p: EndpointPicker, name: str, **labels: str) -> float | None:
    return p.metrics.registry.get_sample_value(name, labels)


def test_with_room_requests_go_at_once_and_past_the_bound_they_wait_until_one_ends():
    async def main() -> None:
        p = flow_picker(per_endpoint=2)
        assert routed(send(p, "r1")[1]) and routed(send(p, "r2")[1])
        stream, raw = send(p, "r3")
        assert waits(raw) and stream.later is not None and len(p.waiting) == 1
        assert sample(p, "inferstack_epp_flow_queue_requests", tenant="none") == 1.0
        end(p, "r1")  # room again: the waiting request goes, on its own stream
        await settled()
        assert stream.later.done() and routed(stream.later.result()) and len(p.waiting) == 0
        assert sample(p, "inferstack_epp_hold_outcomes_total", outcome="routed") == 1.0
    asyncio.run(main())


def test_queue_and_kv_thresholds_also_make_an_endpoint_full():
    async def main() -> None:
        p = flow_picker(per_endpoint=100)
        scraped(p, waiting=9)  # vLLM's own queue past saturation.queue_depth_threshold
        stream, raw = send(p, "r1")
        assert waits(raw)
        scraped(p, waiting=0)
        p.on_scrape(A, True)  # a scrape showing room releases the waiting
        await settled()
        assert stream.later.done() and routed(stream.later.result())
        scraped(p, kv_usage=0.95)
        assert waits(send(p, "r2")[1])
    asyncio.run(main())


def test_a_quiet_tenant_goes_before_a_noisy_tenants_backlog():
    async def main() -> None:
        p = flow_picker(per_endpoint=2)
        running = ["n0", "n1"]
        for rid in running:
            assert routed(send(p, rid, "noisy")[1])
        streams = {f"n{i}": send(p, f"n{i}", "noisy")[0] for i in range(2, 8)}
        streams["q0"] = send(p, "q0", "quiet")[0]  # arrives last
        assert p.waiting.order.lengths() == {"noisy": 6, "quiet": 1}
        order = await released_order(p, streams, running)
        assert order[0] == "q0" and order[1:] == [f"n{i}" for i in range(2, 8)]  # FCFS within the noisy one
        fairness = sample(p, "inferstack_epp_flow_fairness_index")  # noisy got far more while both waited
        assert fairness is not None and 0.5 <= fairness < 0.7
    asyncio.run(main())


def test_a_tenant_with_nothing_running_uses_the_reserved_room_and_only_it():
    async def main() -> None:
        p = flow_picker(per_endpoint=2, reserve_per_endpoint=1)
        assert routed(send(p, "n0", "noisy")[1]) and routed(send(p, "n1", "noisy")[1])
        assert waits(send(p, "n2", "noisy")[1])  # the noisy tenant has requests running: no reserve
        assert routed(send(p, "q0", "quiet")[1])  # the quiet one has none: it starts at once
        assert waits(send(p, "q1", "quiet")[1])  # now it has one running: it waits its turn
        assert p.waiting.order.lengths() == {"noisy": 1, "quiet": 1}
    asyncio.run(main())


def test_two_backlogged_tenants_take_turns_by_weighted_tokens():
    async def main() -> None:
        p = flow_picker(per_endpoint=1)
        running = ["first"]
        assert routed(send(p, "first", "a")[1])
        streams = {}
        for i in range(6):  # b's requests ask for 4x the output: a gets ~4 turns for each of b's
            streams[f"a{i}"] = send(p, f"a{i}", "a", max_tokens=16)[0]
            streams[f"b{i}"] = send(p, f"b{i}", "b", max_tokens=64)[0]
        order = await released_order(p, streams, running)
        # while both wait, a's 6 small requests take as many weighted tokens as b's 2 large ones
        assert sorted(order[:8]) == [*(f"a{i}" for i in range(6)), "b0", "b1"], order
    asyncio.run(main())


def test_priority_bands_leave_strictly_in_order_and_sheddable_requests_wait_instead_of_429():
    async def main() -> None:
        p = flow_picker(per_endpoint=1)
        running = ["r0"]
        assert routed(send(p, "r0", "a")[1])
        streams = {"batch": send(p, "batch", "a", objective="batch")[0],  # sheddable: waits, lowest band
                   "plain": send(p, "plain", "a")[0],
                   "urgent": send(p, "urgent", "b", objective="urgent")[0]}
        assert all(s.later is not None for s in streams.values())
        assert await released_order(p, streams, running) == ["urgent", "plain", "batch"]
    asyncio.run(main())


def test_a_full_queue_and_an_expired_wait_get_429_with_retry_after():
    async def main() -> None:
        p = flow_picker(per_endpoint=1, max_requests=2, max_wait_s=0.05, retry_after_s=3)
        assert routed(send(p, "r0", "a")[1])
        s1, _ = send(p, "r1", "a")
        send(p, "r2", "b")
        status, err, hs = rejected(send(p, "r3", "b")[1])
        assert status == 429 and err["code"] == "queue_full" and hs["retry-after"] == "3"
        assert "saturated" in err["message"] and "retry after 3 s" in err["message"]
        await asyncio.wait_for(s1.later, 2)
        status, err, hs = rejected(s1.later.result())
        assert status == 429 and err["code"] == "wait_expired" and hs["retry-after"] == "3"
        assert sample(p, "inferstack_epp_flow_rejected_requests_total", tenant="b", reason="queue_full") == 1.0
        assert sample(p, "inferstack_epp_flow_rejected_requests_total", tenant="a", reason="wait_expired") == 1.0
        assert sample(p, "inferstack_epp_hold_outcomes_total", outcome="timeout") >= 1.0
    asyncio.run(main())


def test_a_client_that_leaves_leaves_the_queue():
    async def main() -> None:
        p = flow_picker(per_endpoint=1)
        assert routed(send(p, "r0")[1])
        stream, _ = send(p, "r1")
        stream.later.cancel()
        await settled()
        assert len(p.waiting) == 0 and sample(p, "inferstack_epp_hold_outcomes_total", outcome="cancelled") == 1.0
    asyncio.run(main())


def test_served_tokens_are_charged_per_tenant_and_tenant_labels_are_bounded(monkeypatch):
    import inferstack.gateway.epp_metrics as em

    async def main() -> None:
        p = flow_picker(per_endpoint=1000)
        send(p, "r0", "a", max_tokens=10)
        served = sample(p, "inferstack_epp_flow_served_weighted_tokens_total", tenant="a")
        assert served == p.waiting.order.counter("a") and served >= 20  # output x2 + the prompt
        monkeypatch.setattr(em, "MAX_TENANT_LABELS", 3)
        for i in range(10):
            send(p, f"x{i}", f"t{i}")
        assert sample(p, "inferstack_epp_flow_served_weighted_tokens_total", tenant="other") > 0
    asyncio.run(main())


def test_a_response_that_stopped_early_gives_back_its_unused_charge_when_envoy_reports_its_usage():
    async def main() -> None:
        p = flow_picker(per_endpoint=1000)
        send(p, "r0", "a", max_tokens=100)
        charged = p.waiting.order.counter("a")
        assert charged >= 200  # charged at dispatch as if all 100 tokens were generated (x2)
        p.access_log(access_log_msg("r0", usage={"prompt_tokens": 12, "completion_tokens": 5, "reported": True,
                                                 "cached_tokens": 8}))
        assert p.waiting.order.counter("a") == pytest.approx(12 + 2 * 5)  # settled to vLLM's count
        assert sample(p, "inferstack_epp_tenant_tokens_total", tenant="a", kind="prompt") == 12.0
        assert sample(p, "inferstack_epp_tenant_tokens_total", tenant="a", kind="completion") == 5.0
        assert sample(p, "inferstack_epp_tenant_tokens_total", tenant="a", kind="cached") == 8.0
        # a stream without vLLM's usage: the completion events counted, the prompt stays estimated
        send(p, "r1", "b", max_tokens=100)
        p.access_log(access_log_msg("r1", usage={"completion_tokens": 7, "reported": False}))
        assert sample(p, "inferstack_epp_tenant_tokens_total", tenant="b", kind="prompt") is None
        assert sample(p, "inferstack_epp_tenant_tokens_total", tenant="b", kind="completion") == 7.0
        assert p.waiting.order.counter("b") < 2 * 100
        # no usage recorded (an error answer, a client that left): the estimate stands
        send(p, "r2", "c", max_tokens=100)
        before = p.waiting.order.counter("c")
        p.access_log(access_log_msg("r2"))
        assert p.waiting.order.counter("c") == before and len(p.in_flight) == 0
    asyncio.run(main())


def test_without_flow_control_nothing_waits_and_sheddable_requests_get_429_when_saturated():
    async def main() -> None:
        p = EndpointPicker(EppSettings(completion="access-log",
                                       objectives=[ObjectiveSettings(name="batch", priority=-1)]))
        p.on_endpoints([A])
        scraped(p, waiting=9)
        assert p.waiting is None and routed(send(p, "r1")[1])
        assert rejected(send(p, "r2", objective="batch")[1])[0] == 429
    asyncio.run(main())


def test_envoy_waits_long_enough_and_the_setting_lives_on_the_gateway():
    s = GatewaySettings(flow_control=FlowControlSettings(enabled=True, max_wait_s=40))
    ext_proc = build_envoy_config(s, __import__("pathlib").Path("/tmp/eds.json"))
    text = json.dumps(ext_proc)
    assert '"max_message_timeout": "45.000s"' in text
    with pytest.raises(ValueError, match="not under 'epp'"):
        GatewaySettings(epp=EppSettings(flow_control=FlowControlSettings(enabled=True)))
    with pytest.raises(ValueError, match="stream_idle_timeout_s"):
        GatewaySettings(flow_control=FlowControlSettings(enabled=True, max_wait_s=400))
    assert EppSettings(flow_control=FlowControlSettings(enabled=True, max_wait_s=40)).wait_timer_s() == 45.0


def test_status_reads_the_queue_per_tenant_from_the_pickers_metrics_page():
    from prometheus_client import generate_latest

    from inferstack.gateway.status import read_flow_control

    async def main() -> None:
        p = flow_picker(per_endpoint=1, max_requests=2)
        send(p, "r0", "a")
        send(p, "r1", "a")
        send(p, "r2", "b")
        send(p, "r3", "b")  # the queue is full: 429
        flow = read_flow_control([generate_latest(p.metrics.registry).decode()], enabled=True)
        assert flow.enabled and flow.waiting == 2 and flow.fairness_index is not None
        assert {t: f.waiting for t, f in flow.tenants.items()} == {"a": 1, "b": 1}
        assert flow.tenants["a"].served_weighted_tokens > 0 and flow.tenants["b"].rejected == {"queue_full": 1}
        assert flow.summary().startswith("flow control  2 waiting (by tenant: a 1, b 1); fairness index 0.")
    asyncio.run(main())


def test_a_request_cancelled_just_before_its_release_is_dropped_not_answered():
    async def main() -> None:
        p = flow_picker(per_endpoint=1)
        assert routed(send(p, "r0")[1])
        _, _ = send(p, "r1")
        (waiting,) = list(p.waiting.order)
        waiting.future.cancel()  # the transport cancelled it; its done-callback has not run yet
        end(p, "r0")  # room: the release must skip it, not answer a cancelled future
        await settled()
        assert len(p.waiting) == 0 and sample(p, "inferstack_epp_hold_outcomes_total", outcome="cancelled") == 1.0
    asyncio.run(main())
