"""Scale from zero: the EPP holds requests while no endpoint is routable (bounded, FIFO, with a
deadline), answers them later on their stream, and releases them only to endpoints Envoy has loaded."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import httpx
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.errors import ConfigError
from inferstack.gateway.datastore import EndpointMetrics
from inferstack.gateway.envoy_config import CLUSTER_NAME
from inferstack.gateway.epp import DESTINATION_HEADER, EndpointPicker, _start_grpcio
from inferstack.gateway.h2grpc import StreamContext
from inferstack.gateway.hold import EnvoyLoadWatch, envoy_pool_hosts
from inferstack.gateway.settings import EppSettings, HoldSettings
from inferstack.process import free_port

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
A, B = "10.0.0.1:8000", "10.0.0.2:8000"


def body_msg(content: str = "hi") -> bytes:
    doc = {**CHAT, "messages": [{"role": "user", "content": content}]}
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=json.dumps(doc).encode(),
                                                         end_of_stream=True)).SerializeToString()


def holding_picker(**hold: object) -> EndpointPicker:
    return EndpointPicker(EppSettings(hold=HoldSettings(enabled=True, **hold)))  # type: ignore[arg-type]


def make_ready(p: EndpointPicker, *addresses: str) -> None:
    p.on_endpoints(list(addresses))
    for a in addresses:
        p.datastore.update_metrics(a, EndpointMetrics(scraped_at=time.monotonic()))


def sample(p: EndpointPicker, name: str, **labels: str) -> float | None:
    return p.metrics.registry.get_sample_value(name, labels)


def destination(raw: bytes) -> str:
    r = pb.ProcessingResponse.FromString(raw)
    return {h.header.key: h.header.raw_value.decode()
            for h in r.request_body.response.header_mutation.set_headers}[DESTINATION_HEADER]


def error_of(raw: bytes) -> tuple[int, dict]:
    r = pb.ProcessingResponse.FromString(raw).immediate_response
    return r.status.code, json.loads(r.body)["error"]


def hold_one(p: EndpointPicker, content: str = "hi") -> tuple[StreamContext, bytes]:
    stream = StreamContext(1)
    return stream, p.handle(body_msg(content), stream)


def test_settings_defaults_and_bounds():
    h = HoldSettings()
    assert (h.enabled, h.timeout_s, h.max_requests) == (False, 120.0, 64)
    assert EppSettings().hold == h
    for bad in ({"timeout_s": 0}, {"max_requests": 0}, {"timeout_s": 4000}):
        with pytest.raises(ValueError):
            HoldSettings(**bad)  # type: ignore[arg-type]


def test_no_routable_endpoint_holds_with_a_timer_override_and_serves_health():
    async def main() -> None:
        p = holding_picker(timeout_s=30)
        assert p.health() == b"\x08\x01"  # SERVING with no endpoint at all: it takes requests
        stream, raw = hold_one(p)
        r = pb.ProcessingResponse.FromString(raw)
        assert r.WhichOneof("response") is None  # only the timer override: Envoy ignores the rest
        assert r.override_message_timeout.ToMilliseconds() == 35_000  # the hold + 5 s margin
        assert isinstance(stream.later, asyncio.Future) and not stream.later.done()
        assert stream.finish  # honoured after the deferred reply
        assert sample(p, "inferstack_epp_held_requests") == 1.0

    asyncio.run(main())


def test_held_requests_are_released_oldest_first_once_an_endpoint_is_ready():
    async def main() -> None:
        p = holding_picker()
        order: list[str] = []
        futures = []
        for name in ("first", "second", "third"):
            stream, _ = hold_one(p, name)
            stream.later.add_done_callback(lambda f, n=name: order.append(n))  # type: ignore[union-attr]
            futures.append(stream.later)
        p.on_endpoints([A])
        p.on_scrape(A, False)  # a failed scrape releases nothing
        assert not any(f.done() for f in futures)
        make_ready(p, A)
        stream, raw = hold_one(p, "fourth")  # ready, but not released yet: it queues behind the others
        assert stream.later is not None
        p.on_scrape(A, True)
        await asyncio.wait([*futures, stream.later])  # type: ignore[list-item]
        assert order == ["first", "second", "third"]
        assert all(destination(f.result()) == A for f in [*futures, stream.later])
        assert sample(p, "inferstack_epp_held_requests") == 0.0
        assert sample(p, "inferstack_epp_hold_outcomes_total", outcome="routed") == 4.0
        assert sample(p, "inferstack_epp_hold_seconds_count", outcome="routed") == 4.0
        assert p.datastore.get(A).in_flight == 4  # routed like any request
        stream, raw = hold_one(p, "fifth")  # nothing held: routed at once
        assert stream.later is None and destination(raw) == A

    asyncio.run(main())


def test_a_held_request_is_rewritten_when_released():
    from inferstack.gateway.settings import RewriteSettings, RewriteTarget

    async def main() -> None:
        p = EndpointPicker(EppSettings(hold=HoldSettings(enabled=True), rewrites=[
            RewriteSettings(model="m", targets=[RewriteTarget(model="base")])]))
        stream, _ = hold_one(p)
        make_ready(p, A)
        p.director.release_waiting()
        common = pb.ProcessingResponse.FromString(await stream.later).request_body.response  # type: ignore[arg-type]
        assert json.loads(common.body_mutation.body)["model"] == "base"

    asyncio.run(main())


def test_a_full_hold_queue_answers_503_json_at_once():
    async def main() -> None:
        p = holding_picker(max_requests=2)
        hold_one(p)
        hold_one(p)
        stream, raw = hold_one(p)
        assert stream.later is None
        code, err = error_of(raw)
        assert code == 503 and err["type"] == "service_unavailable"
        assert "hold queue is full (2 requests already wait" in err["message"]
        assert sample(p, "inferstack_epp_hold_outcomes_total", outcome="full") == 1.0
        assert sample(p, "inferstack_epp_held_requests") == 2.0

    asyncio.run(main())


def test_the_hold_timeout_answers_503_json_saying_why():
    async def main() -> None:
        p = holding_picker(timeout_s=0.05)
        p.on_endpoints([A])  # discovered, never ready
        stream, _ = hold_one(p)
        code, err = error_of(await asyncio.wait_for(stream.later, 2))  # type: ignore[arg-type]
        assert code == 503 and err["type"] == "service_unavailable"
        assert err["message"] == ("no model server became ready within 0.05 s (scale-from-zero hold); "
                                  "the pool has 1 endpoints, 0 ready; retry later")
        assert sample(p, "inferstack_epp_hold_outcomes_total", outcome="timeout") == 1.0
        assert sample(p, "inferstack_epp_held_requests") == 0.0

    asyncio.run(main())


def test_a_cancelled_hold_leaves_the_queue():
    async def main() -> None:
        p = holding_picker(max_requests=1)
        stream, _ = hold_one(p)
        stream.later.cancel()  # type: ignore[union-attr]  # what the transport does on a stream reset
        for _ in range(10):  # the cancellation reaches the hold queue through the loop's callbacks
            if sample(p, "inferstack_epp_held_requests") == 0.0:
                break
            await asyncio.sleep(0)
        assert sample(p, "inferstack_epp_held_requests") == 0.0
        assert sample(p, "inferstack_epp_hold_outcomes_total", outcome="cancelled") == 1.0
        again, _ = hold_one(p)  # its place is free again
        assert again.later is not None
        make_ready(p, A)
        p.director.release_waiting()
        assert destination(await again.later) == A  # type: ignore[arg-type]
        assert sample(p, "inferstack_epp_hold_outcomes_total", outcome="routed") == 1.0

    asyncio.run(main())


def test_without_hold_no_endpoint_is_still_503_at_once():
    p = EndpointPicker(EppSettings())
    stream = StreamContext(1)
    code, err = error_of(p.handle(body_msg(), stream))
    assert code == 503 and err["message"] == "no model server endpoint is ready" and stream.later is None
    assert p.health() == b"\x08\x02"


def _admin_transport(state: dict) -> httpx.MockTransport:
    """Envoy's /clusters?format=json listing ``state["hosts"]`` in the pool."""
    def handler(request: httpx.Request) -> httpx.Response:
        state["asked"] += 1
        hosts = [{"address": {"socket_address": {"address": h.rsplit(":", 1)[0].strip("[]"),
                                                 "port_value": int(h.rsplit(":", 1)[1])}}} for h in state["hosts"]]
        return httpx.Response(200, json={"cluster_statuses": [{"name": "epp"},
                                                              {"name": CLUSTER_NAME, "host_statuses": hosts}]})
    return httpx.MockTransport(handler)


def test_held_requests_wait_until_envoy_has_loaded_the_new_endpoint(tmp_path):
    async def main() -> None:
        settings = EppSettings(eds_path=tmp_path / "eds.json", envoy_admin_port=9901,
                               hold=HoldSettings(enabled=True))
        p = EndpointPicker(settings)
        state = {"hosts": [], "asked": 0}
        p.envoy = EnvoyLoadWatch(9901, CLUSTER_NAME, p.director.release_waiting,
                                 client=httpx.AsyncClient(transport=_admin_transport(state)))
        stream, _ = hold_one(p)
        make_ready(p, A)  # scraped ready and in the EDS file, but Envoy has not loaded it
        assert '"address": "10.0.0.1", "port_value": 8000' in (tmp_path / "eds.json").read_text()
        p.on_scrape(A, True)
        await asyncio.sleep(0.05)
        assert not stream.later.done() and p.envoy.pending == {A}  # type: ignore[union-attr]
        assert hold_one(p)[0].later is not None  # a new request is held too, not routed to A
        state["hosts"] = [A]  # Envoy loads the file
        await asyncio.wait_for(stream.later, 2)  # type: ignore[arg-type]
        assert destination(stream.later.result()) == A  # type: ignore[union-attr]
        assert p.envoy.pending == set() and state["asked"] >= 2
        await p.envoy.stop()

    asyncio.run(main())


def test_envoy_pool_hosts_reads_the_admin_json_v4_and_v6():
    doc = {"cluster_statuses": [
        {"name": CLUSTER_NAME, "host_statuses": [
            {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 8000}}},
            {"address": {"socket_address": {"address": "::1", "port_value": 8001}}}]},
        {"name": "epp", "host_statuses": [{"address": {"socket_address": {"address": "10.9.9.9", "port_value": 1}}}]}]}
    import ipaddress
    assert envoy_pool_hosts(doc, CLUSTER_NAME) == {(ipaddress.ip_address("10.0.0.1"), 8000),
                                                   (ipaddress.ip_address("::1"), 8001)}


def test_hold_with_an_eds_mirror_needs_envoys_admin_port(tmp_path):
    from inferstack.configfile import validate
    with pytest.raises(ConfigError, match="needs envoy_admin_port"):
        validate(EppSettings, {"eds_path": str(tmp_path / "e.json"), "hold": {"enabled": True}}, "epp.yaml")


def test_grpcio_server_answers_a_held_request_later_and_drops_it_on_cancel():
    async def main() -> None:
        p = holding_picker()
        port = free_port()
        server = await _start_grpcio(p, "127.0.0.1", port)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                process = ch.stream_stream("/envoy.service.ext_proc.v3.ExternalProcessor/Process")
                gone = process(iter([body_msg("leaves")]))
                assert pb.ProcessingResponse.FromString(await gone.read()).HasField("override_message_timeout")
                gone.cancel()  # the client leaves while held
                for _ in range(100):
                    if sample(p, "inferstack_epp_hold_outcomes_total", outcome="cancelled") == 1.0:
                        break
                    await asyncio.sleep(0.01)
                assert sample(p, "inferstack_epp_held_requests") == 0.0
                call = process(iter([body_msg("stays")]))
                assert pb.ProcessingResponse.FromString(await call.read()).HasField("override_message_timeout")
                make_ready(p, A)
                p.director.release_waiting()
                assert destination(await call.read()) == A
                assert await call.read() == grpc.aio.EOF  # finished after the decision
        finally:
            await server.stop(None)

    asyncio.run(main())
