import json
import time

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.gateway.datastore import EndpointMetrics
from inferstack.gateway.epp import DESTINATION_HEADER, EndpointPicker, write_eds_file
from inferstack.gateway.settings import (EppSettings, ObjectiveSettings, RewriteSettings, RewriteTarget,
                                         SaturationSettings)


def picker(endpoints=("10.0.0.1:8000", "10.0.0.2:8000"), waiting=(0, 0), **kw) -> EndpointPicker:
    p = EndpointPicker(EppSettings(**kw))
    p.on_endpoints(list(endpoints))
    for a, w in zip(endpoints, waiting):
        p.datastore.update_metrics(a, EndpointMetrics(waiting=w, scraped_at=time.monotonic()))
    return p


def body_msg(doc) -> bytes:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=raw, end_of_stream=True)).SerializeToString()


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def answer(p, raw) -> pb.ProcessingResponse:
    return pb.ProcessingResponse.FromString(p.handle(raw))


def headers(common) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}


def test_routes_with_header_and_metadata():
    r = answer(picker(waiting=(3, 0)), body_msg(CHAT))
    assert r.WhichOneof("response") == "request_body"
    dest = headers(r.request_body.response)[DESTINATION_HEADER]
    assert dest == "10.0.0.2:8000,10.0.0.1:8000"  # best first, then the fallback
    assert r.dynamic_metadata.fields["envoy.lb"].struct_value.fields[DESTINATION_HEADER].string_value == dest


def test_headers_phase_continues_when_a_body_follows_and_routes_when_not():
    p = picker()
    with_body = pb.ProcessingRequest(request_headers=pb.HttpHeaders(end_of_stream=False)).SerializeToString()
    r = answer(p, with_body)
    assert r.WhichOneof("response") == "request_headers" and not r.request_headers.response.header_mutation.set_headers
    no_body = pb.ProcessingRequest(request_headers=pb.HttpHeaders(end_of_stream=True)).SerializeToString()
    r = answer(p, no_body)
    assert DESTINATION_HEADER in headers(r.request_headers.response)


def test_malformed_body_is_400_json():
    r = answer(picker(), body_msg(b"{nope"))
    assert r.immediate_response.status.code == 400
    err = json.loads(r.immediate_response.body)["error"]
    assert err["type"] == "invalid_request_error" and "not valid JSON" in err["message"]


def test_no_ready_endpoint_is_503():
    p = EndpointPicker(EppSettings())
    p.on_endpoints(["10.0.0.1:8000"])  # discovered, never scraped: not ready
    r = answer(p, body_msg(CHAT))
    assert r.immediate_response.status.code == 503


def test_sheddable_request_gets_429_only_when_saturated():
    kw = dict(objectives=[ObjectiveSettings(model="batch", priority=-1)],
              saturation=SaturationSettings(queue_depth_threshold=2))
    saturated = picker(waiting=(5, 9), **kw)
    shed = answer(saturated, body_msg({**CHAT, "model": "batch"}))
    assert shed.immediate_response.status.code == 429
    assert answer(saturated, body_msg(CHAT)).WhichOneof("response") == "request_body"  # priority 0: routed
    roomy = picker(waiting=(5, 0), **kw)
    assert answer(roomy, body_msg({**CHAT, "model": "batch"})).WhichOneof("response") == "request_body"
    text = saturated.metrics.registry.get_sample_value("inferstack_epp_shed_requests_total", {"model": "batch"})
    assert text == 1.0


def test_rewrite_mutates_body_and_content_length():
    p = picker(rewrites=[RewriteSettings(model="chat", targets=[RewriteTarget(model="base", weight=1)])])
    r = answer(p, body_msg({**CHAT, "model": "chat", "max_tokens": 3}))
    common = r.request_body.response
    new = json.loads(common.body_mutation.body)
    assert new["model"] == "base" and new["max_tokens"] == 3 and new["messages"] == CHAT["messages"]
    assert headers(common)["content-length"] == str(len(common.body_mutation.body))


def test_metrics_count_outcomes():
    p = picker(objectives=[ObjectiveSettings(model="m")])  # a configured (known) model keeps its label
    p.handle(body_msg(CHAT))
    p.handle(body_msg(b"x"))
    reg = p.metrics.registry
    routed = sum(reg.get_sample_value("inferstack_epp_requests_total",
                                      {"model": "m", "target_model": "m", "endpoint": a, "outcome": "routed"}) or 0
                 for a in ("10.0.0.1:8000", "10.0.0.2:8000"))
    assert routed == 1
    assert reg.get_sample_value("inferstack_epp_scheduling_latency_seconds_count") == 2
    assert reg.get_sample_value("inferstack_epp_endpoint_ready", {"endpoint": "10.0.0.1:8000"}) == 1.0


def test_eds_file(tmp_path):
    path = tmp_path / "eds.json"
    write_eds_file(path, "pool", ["127.0.0.1:1", "[::1]:2"])
    doc = json.loads(path.read_text())
    lb = doc["resources"][0]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"] for e in lb] == [
        {"address": "127.0.0.1", "port_value": 1}, {"address": "::1", "port_value": 2}]


def headers_msg(headers: dict[str, str], end_of_stream: bool = False) -> bytes:
    from envoy.config.core.v3 import base_pb2
    hm = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()])
    return pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hm, end_of_stream=end_of_stream)).SerializeToString()


def access_log_msg(*request_ids: str, usage: dict | None = None) -> bytes:
    """Envoy's access log reporting these responses' ends (``usage``: what the gateway's Lua filter
    recorded in each: prompt_tokens, completion_tokens, reported)."""
    from envoy.data.accesslog.v3 import accesslog_pb2
    from envoy.service.accesslog.v3 import als_pb2
    from inferstack.wire import USAGE_NAMESPACE
    entries = [accesslog_pb2.HTTPAccessLogEntry(request=accesslog_pb2.HTTPRequestProperties(request_id=r))
               for r in request_ids]
    if usage is not None:
        for e in entries:
            e.common_properties.metadata.filter_metadata[USAGE_NAMESPACE].update(usage)
    return als_pb2.StreamAccessLogsMessage(
        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=entries)).SerializeToString()


def test_a_request_counts_in_flight_until_the_access_log_reports_its_end():
    from inferstack.gateway.h2grpc import StreamContext

    p = picker(completion="access-log")
    stream = StreamContext(1)
    assert p.handle(headers_msg({"x-request-id": "req-1", ":path": "/v1/chat/completions"}), stream)
    assert not stream.finish  # the body follows
    r = pb.ProcessingResponse.FromString(p.handle(body_msg(CHAT), stream))
    assert stream.finish  # decided: the EPP ends its stream, Envoy needs it no more
    dest = headers(r.request_body.response)[DESTINATION_HEADER].split(",")[0]
    ep = p.datastore.get(dest)
    assert ep.in_flight == 1 and ep.in_flight_tokens > 0
    p.datastore.update_metrics(dest, EndpointMetrics(scraped_at=time.monotonic()))  # a scrape keeps it
    assert ep.in_flight == 1
    p.access_log(access_log_msg("other-request", "req-1"))
    assert (ep.in_flight, ep.in_flight_tokens) == (0, 0)


def test_scrape_mode_resets_in_flight_at_each_scrape():
    p = picker()  # completion: scrape (the default, for data planes without the access log)
    r = answer(p, body_msg(CHAT))
    dest = headers(r.request_body.response)[DESTINATION_HEADER].split(",")[0]
    assert p.datastore.get(dest).in_flight == 1
    p.datastore.update_metrics(dest, EndpointMetrics(scraped_at=time.monotonic()))
    assert p.datastore.get(dest).in_flight == 0


def test_priority_from_the_objective_header():
    from inferstack.gateway.h2grpc import StreamContext

    kw = dict(objectives=[ObjectiveSettings(name="batch-jobs", priority=-1)],
              saturation=SaturationSettings(queue_depth_threshold=2))
    saturated = picker(waiting=(5, 9), **kw)
    stream = StreamContext(1)
    saturated.handle(headers_msg({"x-gateway-inference-objective": "batch-jobs"}), stream)
    assert pb.ProcessingResponse.FromString(saturated.handle(body_msg(CHAT), stream)).immediate_response.status.code == 429
    other = StreamContext(3)
    saturated.handle(headers_msg({"x-gateway-inference-objective": "no-such-objective"}), other)
    routed = pb.ProcessingResponse.FromString(saturated.handle(body_msg(CHAT), other))
    assert routed.WhichOneof("response") == "request_body"  # unknown objective: the model's priority (0)


def test_health_is_serving_only_with_a_ready_endpoint():
    p = EndpointPicker(EppSettings())
    assert p.health() == b"\x08\x02"  # NOT_SERVING
    p.on_endpoints(["10.0.0.1:8000"])
    assert p.health() == b"\x08\x02"  # discovered, not scraped yet
    p.datastore.update_metrics("10.0.0.1:8000", EndpointMetrics(scraped_at=time.monotonic()))
    assert p.health() == b"\x08\x01"  # SERVING


def test_other_methods_on_v1_models_are_405_as_vllm_answers():
    p = picker()
    for method in ("DELETE", "POST", "PUT", "PATCH"):
        r = answer(p, headers_msg({":method": method, ":path": "/v1/models"}, end_of_stream=True))
        assert r.immediate_response.status.code == 405, method
        assert json.loads(r.immediate_response.body)["error"]["code"] == 405
        assert {h.header.key: h.header.raw_value for h in r.immediate_response.headers.set_headers}["allow"] == b"GET"
    r = answer(p, headers_msg({":method": "GET", ":path": "/v1/models"}, end_of_stream=True))
    assert r.immediate_response.status.code != 405


def test_each_phase_of_a_request_is_timed():
    from inferstack.gateway.h2grpc import StreamContext

    p = picker()
    stream = StreamContext(1)
    p.handle(headers_msg({"x-request-id": "r1"}), stream)
    p.handle(body_msg(CHAT), stream)
    p.handle(body_msg(b"{not json"), StreamContext(3))

    def count(phase: str) -> float | None:
        return p.metrics.registry.get_sample_value("inferstack_epp_phase_seconds_count", {"phase": phase})

    assert (count("headers"), count("parse"), count("decide"), count("encode")) == (1, 2, 1, 2)
    assert p.metrics.registry.get_sample_value("inferstack_epp_scheduling_latency_seconds_count") == 2
