"""The picker's auth step: API keys checked on the headers message, before any body is read."""

import json

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.gateway.decision import RequestContext
from inferstack.gateway.epp import DESTINATION_HEADER
from inferstack.gateway.h2grpc import StreamContext
from inferstack.gateway.settings import EppSettings, GatewaySettings, ObjectiveSettings

from inferstack.wire import RESPONSE_HEADERS_NAMESPACE

from .test_epp import CHAT, access_log_msg, answer, body_msg, headers_msg, picker

KEY_A, KEY_B, SERVICE = "sk-team-a-0123456789", "sk-team-b-0123456789", "sk-service-0123456789"


@pytest.fixture
def keyed(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{key: {KEY_A}, tenant: team-a}}\n- {{key: {KEY_B}, tenant: team-b, priority: -1}}\n")
    service = tmp_path / "service-key"
    service.write_text(SERVICE + "\n")
    return picker(auth_file=keys, service_key_file=service,
                  objectives=[ObjectiveSettings(name="batch", priority=-1), ObjectiveSettings(name="vip", priority=5)])


def _error(r: pb.ProcessingResponse) -> tuple[int, dict, dict]:
    imm = r.immediate_response
    hdrs = {h.header.key: h.header.raw_value.decode() for h in imm.headers.set_headers}
    return imm.status.code, json.loads(imm.body)["error"], hdrs


@pytest.mark.parametrize("authorization", [None, "", "Basic dXNlcjpwYXNz", "Bearer"])
def test_no_key_is_401_on_the_headers_before_the_body(keyed, authorization):
    stream = StreamContext(1)
    hdrs = {":path": "/v1/chat/completions"} | ({"authorization": authorization} if authorization is not None else {})
    status, err, extra = _error(answer_on(keyed, headers_msg(hdrs), stream))
    assert status == 401 and err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
    assert "Authorization: Bearer" in err["message"] and extra["www-authenticate"].startswith("Bearer")
    assert stream.finish  # decided: no body is asked for


def test_a_wrong_key_is_401_naming_only_its_last_four_characters(keyed):
    status, err, _ = _error(answer(keyed, headers_msg({"authorization": "Bearer sk-wrong-key-98765"})))
    assert status == 401 and "...8765" in err["message"] and "sk-wrong" not in err["message"]


def test_a_valid_key_routes_as_its_tenant_and_a_body_less_request_too(keyed):
    stream = StreamContext(1)
    assert answer_on(keyed, headers_msg({"authorization": f"Bearer {KEY_A}"}), stream).WhichOneof(
        "response") == "request_headers"
    ctx = stream.data
    assert isinstance(ctx, RequestContext) and ctx.tenant == "team-a" and ctx.authorization == ""
    r = answer_on(keyed, body_msg(CHAT), stream)
    assert DESTINATION_HEADER in {h.header.key for h in r.request_body.response.header_mutation.set_headers}
    r = answer(keyed, headers_msg({"authorization": f"Bearer {KEY_A}", ":path": "/v1/x"}, end_of_stream=True))
    assert r.WhichOneof("response") == "request_headers"


def test_a_tenant_cannot_claim_another_tenant_by_header_but_the_service_key_names_it(keyed):
    stream = StreamContext(1)
    answer_on(keyed, headers_msg({"authorization": f"Bearer {KEY_A}", "x-gateway-inference-fairness-id": "team-b"}),
              stream)
    assert stream.data.tenant == "team-a"
    stream = StreamContext(3)
    answer_on(keyed, headers_msg({"authorization": f"Bearer {SERVICE}", "x-gateway-inference-fairness-id": "team-b"}),
              stream)
    assert stream.data.tenant == "team-b"


def test_a_keys_priority_replaces_the_objectives_and_a_named_objective_only_lowers_it(keyed):
    d = keyed.director
    assert d._priority("m", "m", RequestContext(priority=-1)) == -1  # team-b: sheddable
    assert d._priority("m", "m", RequestContext(priority=3)) == 3
    assert d._priority("m", "m", RequestContext(priority=3, objective="vip")) == 3  # never raised by a header
    assert d._priority("m", "m", RequestContext(priority=3, objective="batch")) == -1
    assert d._priority("m", "m", RequestContext(objective="vip")) == 5  # no key priority: the objective's


def test_without_keys_the_tenant_is_the_fairness_header_and_nothing_is_refused():
    p = picker()
    stream = StreamContext(1)
    answer_on(p, headers_msg({"x-gateway-inference-fairness-id": "team-z"}), stream)
    assert stream.data.tenant == "team-z"


def test_the_unauthorized_count_rises_per_refusal(keyed):
    for _ in range(3):
        answer(keyed, headers_msg({}))
    refused = sum(s.value for f in keyed.metrics.registry.collect() if f.name == "inferstack_epp_requests"
                  for s in f.samples if s.name.endswith("_total") and s.labels["outcome"] == "unauthorized")
    assert refused == 3


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "gateway.example.com"])
def test_a_gateway_beyond_loopback_needs_keys_or_insecure(tmp_path, host):
    with pytest.raises(ValueError, match="without API keys: set epp.auth_file"):
        GatewaySettings(listen_host=host)
    GatewaySettings(listen_host=host, insecure=True)
    GatewaySettings(listen_host=host, epp=EppSettings(auth_file=tmp_path / "k.yaml"))
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.9"):
        GatewaySettings(listen_host=loopback)


def answer_on(p, raw, stream) -> pb.ProcessingResponse:
    return pb.ProcessingResponse.FromString(p.handle(raw, stream))


def routed(r: pb.ProcessingResponse) -> bool:
    return r.WhichOneof("response") == "request_body" and DESTINATION_HEADER in {
        h.header.key for h in r.request_body.response.header_mutation.set_headers}


def _chat_as(p, key: str, fairness_id: str = "", max_tokens: int = 16, request_id: str = "") -> pb.ProcessingResponse:
    stream = StreamContext(1)
    hdrs = {"authorization": f"Bearer {key}"} | ({"x-gateway-inference-fairness-id": fairness_id} if fairness_id else {})
    hdrs |= {"x-request-id": request_id} if request_id else {}
    answer_on(p, headers_msg(hdrs), stream)
    return answer_on(p, body_msg({**CHAT, "max_tokens": max_tokens}), stream)


def test_quotas_from_the_key_file_refuse_with_openai_ratelimit_headers_and_apply_to_batch_lines(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{key: {KEY_A}, tenant: team-a, requests_per_minute: 2}}\n"
                    f"- {{key: {KEY_B}, tenant: team-b, tokens_per_minute: 100}}\n")
    service = tmp_path / "service-key"
    service.write_text(SERVICE + "\n")
    p = picker(auth_file=keys, service_key_file=service)
    assert routed(_chat_as(p, KEY_A)) and routed(_chat_as(p, KEY_A))
    status, err, hdrs = _error(_chat_as(p, KEY_A))
    assert status == 429 and err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
    assert "Limit 2, Used 2, Requested 1" in err["message"]
    assert hdrs["x-ratelimit-limit-requests"] == "2" and hdrs["x-ratelimit-remaining-requests"] == "0"
    assert int(hdrs["retry-after"]) >= 59 and hdrs["x-ratelimit-reset-requests"].endswith("s")
    # tokens: the prompt (estimated) + max_tokens; a batch line counts for the tenant it runs for
    assert routed(_chat_as(p, KEY_B, max_tokens=60))
    status, err, hdrs = _error(_chat_as(p, SERVICE, fairness_id="team-b", max_tokens=60))
    assert status == 429 and err["type"] == "tokens" and hdrs["x-ratelimit-limit-tokens"] == "100"
    assert routed(_chat_as(p, SERVICE, fairness_id="team-c", max_tokens=60))  # no entry: no quota
    assert p.metrics.registry.get_sample_value("inferstack_epp_flow_rejected_requests_total",
                                               {"tenant": "team-a", "reason": "quota_requests"}) == 1.0


def _answer_headers(r: pb.ProcessingResponse) -> dict[str, str]:
    """The headers the picker asks Envoy's Lua filter to put on the answer (dynamic metadata)."""
    meta = r.dynamic_metadata.fields
    if RESPONSE_HEADERS_NAMESPACE not in meta:
        return {}
    return {k: v.string_value for k, v in meta[RESPONSE_HEADERS_NAMESPACE].struct_value.fields.items()}


def test_an_admitted_answer_carries_the_ratelimit_headers_and_its_tokens_settle_to_what_vllm_reported(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{key: {KEY_A}, tenant: team-a, requests_per_minute: 10, tokens_per_minute: 500}}\n"
                    f"- {{key: {KEY_B}, tenant: team-b}}\n")
    p = picker(auth_file=keys, completion="access-log")
    r = _chat_as(p, KEY_A, max_tokens=200, request_id="r1")
    headers = _answer_headers(r)
    assert routed(r) and headers["x-ratelimit-limit-requests"] == "10" and headers["x-ratelimit-remaining-requests"] == "9"
    left = int(headers["x-ratelimit-remaining-tokens"])
    assert headers["x-ratelimit-limit-tokens"] == "500" and left < 300  # prompt + max_tokens reserved
    assert _error(_chat_as(p, KEY_A, max_tokens=300, request_id="r2"))[0] == 429
    # the first answer used 20 tokens in all: the rest of its reservation comes back
    p.access_log(access_log_msg("r1", usage={"prompt_tokens": 15, "completion_tokens": 5, "reported": True}))
    r = _chat_as(p, KEY_A, max_tokens=300, request_id="r3")
    assert routed(r) and int(_answer_headers(r)["x-ratelimit-remaining-tokens"]) < 500 - 20 - 300
    assert _answer_headers(_chat_as(p, KEY_B, request_id="r4")) == {}  # no limits, no headers


def test_a_request_refused_after_its_quota_admitted_it_gives_its_tokens_back(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{key: {KEY_A}, tenant: team-a, tokens_per_minute: 500}}\n")
    p = picker(auth_file=keys, completion="access-log")
    for ep in p.datastore.all():
        ep.ready = False  # no endpoint: 503 after the quota admitted the request
    assert _error(_chat_as(p, KEY_A, max_tokens=300, request_id="r1"))[0] == 503
    for ep in p.datastore.all():
        ep.ready = True
    r = _chat_as(p, KEY_A, max_tokens=300, request_id="r2")  # 300 + 300 would be over 500 otherwise
    assert routed(r) and int(_answer_headers(r)["x-ratelimit-remaining-tokens"]) >= 500 - 300 - 10
