"""The director's typed decisions (no wire format), and the codec that encodes them once."""

import json
import time

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.gateway.codec import Codec, read_headers
from inferstack.gateway.datastore import Datastore, EndpointMetrics
from inferstack.gateway.decision import Defer, Reject, RequestContext, Respond, Route
from inferstack.gateway.director import MODELS_METHOD_NOT_ALLOWED, NO_ENDPOINT, SHED, Director
from inferstack.gateway.request import parse_body
from inferstack.gateway.settings import EppSettings, ObjectiveSettings, RewriteSettings, RewriteTarget
from inferstack.wire import DESTINATION_HEADER, OBJECTIVE_HEADER

A, B = "10.0.0.1:8000", "10.0.0.2:8000"


def director(waiting=(0, 0), **settings) -> Director:
    d = Director(EppSettings(**settings), Datastore())
    d.datastore.set_addresses([A, B])
    for address, w in zip((A, B), waiting):
        d.datastore.update_metrics(address, EndpointMetrics(waiting=w, scraped_at=time.monotonic()))
    return d


def chat(model: str = "m") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


def test_a_request_is_routed_to_the_emptier_endpoint_with_the_other_as_fallback():
    decision = director(waiting=(5, 0)).decide(parse_body(chat()), RequestContext(), "body", chat(), False)
    assert decision == Route(f"{B},{A}", "body")


def test_admission_rejects_with_typed_reasons():
    empty = Director(EppSettings(), Datastore())
    assert empty.decide(parse_body(chat()), RequestContext(), "body", chat(), False) is NO_ENDPOINT
    sheddable = director(waiting=(50, 50), objectives=[ObjectiveSettings(model="m", priority=-1)])
    assert sheddable.decide(parse_body(chat()), RequestContext(), "body", chat(), False) is SHED


def test_a_rewrite_routes_with_the_new_body():
    d = director(rewrites=[RewriteSettings(model="m", targets=[RewriteTarget(model="base")])])
    decision = d.decide(parse_body(chat()), RequestContext(), "body", chat(), False)
    assert isinstance(decision, Route) and json.loads(decision.new_body)["model"] == "base"


def test_body_less_requests():
    d = director()
    assert d.decide_body_less(RequestContext(path="/v1/models", method="DELETE"), False) is MODELS_METHOD_NOT_ALLOWED
    assert isinstance(d.decide_body_less(RequestContext(path="/health", method="GET"), False), Route)
    for address in (A, B):  # both lists known: the director answers itself
        d.datastore.get(address).served_models = frozenset({"m"})
        d.datastore.get(address).model_entries = ({"id": "m", "object": "model"},)
    answer = d.decide_body_less(RequestContext(path="/v1/models", method="GET"), False)
    assert isinstance(answer, Respond) and [m["id"] for m in json.loads(answer.body)["data"]] == ["m"]


def test_a_held_request_is_deferred():
    import asyncio

    async def main() -> None:
        from inferstack.gateway.settings import HoldSettings
        d = Director(EppSettings(hold=HoldSettings(enabled=True)), Datastore())
        decision = d.decide(parse_body(chat()), RequestContext(request_id="r1"), "body", chat(), True)
        assert isinstance(decision, Defer) and len(d.waiting) == 1
        decision.later.cancel()  # type: ignore[attr-defined]

    asyncio.run(main())


def test_the_codec_reads_headers_and_encodes_each_decision_once():
    from envoy.config.core.v3 import base_pb2
    hm = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in
                                     {"x-request-id": "r7", OBJECTIVE_HEADER: "batch", ":path": "/v1/models",
                                      ":method": "GET"}.items()])
    ctx = read_headers(pb.HttpHeaders(headers=hm, end_of_stream=True), now=5.0)
    assert ctx == RequestContext("r7", "batch", "/v1/models", "GET", 5.0)
    codec = Codec(hold_timer_s=35.0)
    route = codec.encode(Route(A, "body"))
    assert codec.encode(Route(A, "body")) is route  # cached per destination
    r = pb.ProcessingResponse.FromString(route)
    assert {h.header.key: h.header.raw_value for h in r.request_body.response.header_mutation.set_headers} == {
        DESTINATION_HEADER: A.encode()}
    err = pb.ProcessingResponse.FromString(codec.encode(Reject(429, "busy", "too_many_requests")))
    assert err.immediate_response.status.code == 429
    assert json.loads(err.immediate_response.body) == {"error": {"message": "busy", "type": "too_many_requests",
                                                                 "code": 429}}
    assert pb.ProcessingResponse.FromString(codec.hold_timer).override_message_timeout.ToMilliseconds() == 35_000
