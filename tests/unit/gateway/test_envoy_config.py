import subprocess

import pytest
import yaml

from inferstack.gateway.envoy_config import CLUSTER_NAME, build_envoy_config
from inferstack.gateway.epp import write_eds_file
from inferstack.gateway.runtime import envoy_binary
from inferstack.gateway.settings import EppSettings, GatewaySettings, HoldSettings


def _config(tmp_path, **kw):
    eds = tmp_path / "eds" / "eds.json"
    eds.parent.mkdir()
    write_eds_file(eds, CLUSTER_NAME, ["127.0.0.1:8101", "127.0.0.1:8102"])
    return build_envoy_config(GatewaySettings(**kw), eds)


@pytest.mark.parametrize(("hold", "pickers"), [(False, 1), (True, 1), (False, 2)], ids=["plain", "hold", "pickers"])
def test_envoy_accepts_the_generated_config(tmp_path, hold, pickers):
    cfg = _config(tmp_path, port=18080, admin_port=18901, epp=EppSettings(grpc_port=18002),
                  hold=HoldSettings(enabled=hold), pickers=pickers)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout + proc.stderr


def test_shape(tmp_path):
    cfg = _config(tmp_path, retries=3)
    assert cfg["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext = hcm["http_filters"][0]["typed_config"]
    mode = ext["processing_mode"]
    assert mode["request_body_mode"] == "BUFFERED"
    assert mode["response_header_mode"] == "SKIP" and mode["response_body_mode"] == "NONE"
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    assert route["retry_policy"]["num_retries"] == 3
    assert "connect-failure" in route["retry_policy"]["retry_on"]
    pool = cfg["static_resources"]["clusters"][0]
    lb = pool["load_balancing_policy"]["policies"][0]["typed_extension_config"]
    assert lb["name"] == "envoy.load_balancing_policies.override_host"
    sources = lb["typed_config"]["override_host_sources"]
    assert sources[0]["metadata"]["key"] == "envoy.lb" and sources[1]["header"] == "x-gateway-destination-endpoint"


def test_failure_modes_access_log_and_least_request_fallback(tmp_path):
    closed = _config(tmp_path)
    hcm = closed["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext = hcm["http_filters"][0]["typed_config"]
    assert ext["failure_mode_allow"] is False and ext["status_on_error"] == {"code": 503}
    mapper = hcm["local_reply_config"]["mappers"][0]
    assert "ext_proc_error" in mapper["filter"]["extension_filter"]["typed_config"]["expression"]
    assert "endpoint picker" in mapper["body_format_override"]["text_format_source"]["inline_string"]
    als = hcm["access_log"][0]["typed_config"]["common_config"]
    assert als["grpc_service"]["envoy_grpc"]["cluster_name"] == "epp"
    pool = closed["static_resources"]["clusters"][0]
    fallback = pool["load_balancing_policy"]["policies"][0]["typed_extension_config"]["typed_config"]["fallback_policy"]
    assert fallback["policies"][0]["typed_extension_config"]["name"] == "envoy.load_balancing_policies.least_request"
    (tmp_path / "open").mkdir()
    opened = _config(tmp_path / "open", epp_failure_mode="open")
    hcm = opened["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][0]["typed_config"]["failure_mode_allow"] is True


def _ext_proc(cfg: dict) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"][0]["typed_config"]


def test_hold_lets_the_epp_extend_the_ext_proc_timer(tmp_path):
    plain = _ext_proc(_config(tmp_path))
    assert "max_message_timeout" not in plain and plain["message_timeout"] == "2.000s"
    (tmp_path / "hold").mkdir()
    held = _ext_proc(_config(tmp_path / "hold", hold=HoldSettings(enabled=True, timeout_s=120)))
    assert held["max_message_timeout"] == "125.000s" and held["message_timeout"] == "2.000s"


def test_two_pickers_share_ext_proc_and_each_gets_every_log(tmp_path):
    cfg = _config(tmp_path, pickers=2, epp=EppSettings(grpc_port=9002, metrics_port=9090))
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"]
             for e in clusters["epp"]["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert ports == [9002, 9003]
    assert clusters["epp"]["health_checks"][0]["grpc_health_check"] == {}
    assert clusters["epp"]["outlier_detection"]["consecutive_local_origin_failure"] == 1
    for i in (0, 1):
        ep = clusters[f"epp-{i}"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in ep] == [9002 + i]
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ends = [a["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] for a in hcm["access_log"]]
    assert ends == ["epp-0", "epp-1"]
    ext = hcm["http_filters"][0]["typed_config"]["grpc_service"]
    assert "connect-failure" in ext["retry_policy"]["retry_on"]  # a dead picker's stream moves on
    router = hcm["http_filters"][-1]["typed_config"]
    assert router["upstream_log_options"] == {"flush_upstream_log_on_upstream_stream": True}
    starts = router["upstream_log"]
    assert [s["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] for s in starts] == \
        ["epp-0", "epp-1"]
    assert starts[0]["filter"] == {"log_type_filter": {"types": ["UpstreamPoolReady"]}}
    assert starts[0]["typed_config"]["additional_request_headers_to_log"] == ["x-inferstack-route"]


def test_one_picker_keeps_the_plain_shape(tmp_path):
    cfg = _config(tmp_path)
    assert [c["name"] for c in cfg["static_resources"]["clusters"]] == [CLUSTER_NAME, "epp"]
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert "upstream_log" not in hcm["http_filters"][-1]["typed_config"]
    assert "retry_policy" not in hcm["http_filters"][0]["typed_config"]["grpc_service"]
