"""The gateway overhead benchmark's baselines: the static-route Envoy config, the minimal grpcio
ext_proc server, and the ratios/targets the report prints (benchmarks/ is not a package: loaded by path)."""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.gateway.envoy_config import CLUSTER_NAME, build_envoy_config
from inferstack.gateway.runtime import envoy_binary
from inferstack.gateway.settings import EppSettings, GatewaySettings
from inferstack.process import free_port

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


def _load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


overhead = _load("gateway_overhead")
minimal = _load("minimal_grpcio_epp")


def _gateway_config(tmp_path: Path) -> dict:
    settings = GatewaySettings(port=18080, admin_port=18901, epp=EppSettings(grpc_port=18002))
    return build_envoy_config(settings, tmp_path / "eds" / "eds.json")


def _hcm(cfg: dict) -> dict:
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


_EPP_ACCESS_LOG = {"name": "envoy.access_loggers.http_grpc", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
    "common_config": {"log_name": "epp", "transport_api_version": "V3",
                      "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}}}}}


@pytest.mark.parametrize("epp_access_log", [False, True])
def test_static_route_config_is_plain_envoy_and_accepted(tmp_path, epp_access_log):
    gateway = _gateway_config(tmp_path)
    if epp_access_log:  # a gateway that reports each response's end to the EPP
        _hcm(gateway)["access_log"] = [_EPP_ACCESS_LOG]
    before = copy.deepcopy(gateway)
    cfg = overhead.static_route_config(gateway, "127.0.0.1:8201")
    assert gateway == before  # the input is not changed
    assert [f["name"] for f in _hcm(cfg)["http_filters"]] == ["envoy.filters.http.router"]
    with_lua = overhead.static_route_config(gateway, "127.0.0.1:8201", keep_lua=True)  # variant (a')
    assert [f["name"] for f in _hcm(with_lua)["http_filters"]] == ["envoy.filters.http.lua", "envoy.filters.http.router"]
    assert _hcm(cfg)["route_config"] == _hcm(gateway)["route_config"]  # same route, retries, timeouts
    assert _hcm(cfg).get("access_log", []) == []
    (pool,) = cfg["static_resources"]["clusters"]
    assert pool["name"] == CLUSTER_NAME and pool["type"] == "STATIC"
    assert "eds_cluster_config" not in pool and "load_balancing_policy" not in pool
    addr = pool["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert addr == {"address": "127.0.0.1", "port_value": 8201}
    path = tmp_path / "envoy_static.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_static_route_config_rejects_a_config_without_ext_proc(tmp_path):
    plain = overhead.static_route_config(_gateway_config(tmp_path), "127.0.0.1:8201")
    with pytest.raises(ValueError, match="no ext_proc filter"):
        overhead.static_route_config(plain, "127.0.0.1:8201")


def test_minimal_processor_continues_headers_routes_body_drains_logs_and_is_healthy():
    async def scenario() -> tuple[list[pb.ProcessingResponse], bytes]:
        port = free_port()
        server = await minimal.start("127.0.0.1", port, "127.0.0.1:8201")
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                process = channel.stream_stream(
                    "/envoy.service.ext_proc.v3.ExternalProcessor/Process",
                    request_serializer=pb.ProcessingRequest.SerializeToString,
                    response_deserializer=pb.ProcessingResponse.FromString)
                call = process()
                answers = []
                for msg in (pb.ProcessingRequest(request_headers=pb.HttpHeaders(end_of_stream=False)),
                            pb.ProcessingRequest(request_body=pb.HttpBody(body=b'{"model":"m"}', end_of_stream=True))):
                    await call.write(msg)
                    answers.append(await call.read())
                await call.done_writing()
                health = await channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=5)
                logs = channel.stream_unary("/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs")
                assert await logs(iter([b"\x0a\x00", b""]), timeout=5) == b""  # drained, not parsed
        finally:
            await server.stop(grace=None)
        return answers, health

    (headers, body), health = asyncio.run(scenario())
    assert headers.WhichOneof("response") == "request_headers"
    assert not headers.request_headers.HasField("response")  # a plain continue
    assert body.WhichOneof("response") == "request_body"
    (opt,) = body.request_body.response.header_mutation.set_headers
    assert (opt.header.key, opt.header.raw_value) == ("x-gateway-destination-endpoint", b"127.0.0.1:8201")
    lb = body.dynamic_metadata.fields["envoy.lb"].struct_value.fields
    assert lb["x-gateway-destination-endpoint"].string_value == "127.0.0.1:8201"
    assert health == b"\x08\x01"


def _row(clients: int, p50: float, rps: float, errors: int = 0) -> dict:
    return {"clients": clients, "p50_ms": p50, "p99_ms": 2 * p50, "rps": rps, "errors": errors}


@pytest.mark.parametrize(("full_p50_1", "full_rps_10", "minimal_p50_1", "expected"), [
    (0.5, 3000.0, 1.0, [True, True]),     # added 0.4 / 0.9; 3000 / 1000
    (0.8, 2000.0, 1.0, [False, False]),   # added 0.7 / 0.9; 2000 / 1000
    (0.5, 3000.0, 0.05, [None, True]),    # the baseline's added p50 is within noise: no ratio
])
def test_summarize_targets(full_p50_1, full_rps_10, minimal_p50_1, expected):
    results = {
        "direct": [_row(1, 0.1, 8000), _row(10, 0.5, 50000)],
        "envoy_static": [_row(1, 0.2, 5000), _row(10, 0.7, 9000)],
        "minimal_grpcio": [_row(1, minimal_p50_1, 700), _row(10, 3.0, 1000)],
        "gateway": [_row(1, full_p50_1, 2000), _row(10, 1.5, full_rps_10)],
    }
    summary = overhead.summarize(results)
    assert [t["met"] for t in summary["targets"]] == expected
    assert results["gateway"][0]["added_p50_ms"] == pytest.approx(full_p50_1 - 0.1)
    assert "added_p50_ms" not in results["direct"][0]
    report = overhead.format_report(results, summary, "header")
    assert ("NOT met" in report) == (False in expected)
    assert ("no ratio" in report) == (None in expected)


def test_summarize_without_the_target_client_counts():
    results = {v: [_row(100, 1.0, 1000)] for v in overhead.VARIANTS}
    summary = overhead.summarize(results)
    assert [t["met"] for t in summary["targets"]] == [None, None]
    assert "not measured" in overhead.format_report(results, summary, "header")
