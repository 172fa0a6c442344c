"""How the stack wires the batch service in: Envoy's route (checked by Envoy itself, and served by a
real Envoy without any picker), the picker objective, the stack config and the `up` flags."""

import argparse
import io
import subprocess
import time

import httpx
import openai
import pytest
import yaml
from batchfakes import ThreadServer, chat_line, jsonl

from inferstack.batch.api import create_app
from inferstack.batch.settings import BatchSettings, DispatchSettings
from inferstack.batch.stack import gateway_with_batch, resolve_batch
from inferstack.stack.config import load_config
from inferstack.commands import stack as stack_cli
from inferstack.stack.state import StateFile
from inferstack.errors import ConfigError
from inferstack.gateway.envoy_config import BATCH_CLUSTER, CLUSTER_NAME, build_envoy_config
from inferstack.gateway.epp import write_eds_file
from inferstack.gateway.runtime import envoy_binary
from inferstack.gateway.settings import EppSettings, GatewaySettings, ObjectiveSettings
from inferstack.process import free_ports


def _envoy_config(tmp_path, **kw):
    eds = tmp_path / "eds" / "eds.json"
    eds.parent.mkdir(exist_ok=True)
    write_eds_file(eds, CLUSTER_NAME, ["127.0.0.1:8101"])
    return build_envoy_config(GatewaySettings(**kw), eds)


def _routes(cfg):
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


def test_batch_routes_come_before_the_catch_all_without_the_picker(tmp_path):
    cfg = _envoy_config(tmp_path, batch_port=18091)
    routes = _routes(cfg)
    assert [r["match"]["prefix"] for r in routes] == ["/v1/files", "/v1/batches", "/"]
    for route in routes[:2]:
        assert route["route"]["cluster"] == BATCH_CLUSTER
        per_filter = route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
        assert per_filter["disabled"] is True and per_filter["@type"].endswith("ExtProcPerRoute")
    batch = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == BATCH_CLUSTER)
    addr = batch["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert batch["type"] == "STATIC" and addr == {"address": "127.0.0.1", "port_value": 18091}
    (tmp_path / "plain").mkdir()
    plain = _envoy_config(tmp_path / "plain", port=18080)
    assert [r["match"]["prefix"] for r in _routes(plain)] == ["/"]
    assert BATCH_CLUSTER not in [c["name"] for c in plain["static_resources"]["clusters"]]


def test_envoy_accepts_the_batch_routes(tmp_path):
    cfg = _envoy_config(tmp_path, port=18080, admin_port=18901, epp=EppSettings(grpc_port=18002), batch_port=18091)
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_real_envoy_serves_files_and_batches_with_no_picker_running(tmp_path, backend):
    listener, admin, grpc_port, metrics, batch_port = free_ports(5)
    cfg = _envoy_config(tmp_path, port=listener, admin_port=admin, batch_port=batch_port,
                        epp=EppSettings(grpc_port=grpc_port, metrics_port=metrics))  # no EPP listens there
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    settings = BatchSettings(port=batch_port, gateway_url=backend.url, state_dir=tmp_path / "state",
                             poll_interval_s=0.05, max_file_bytes=200_000,
                             dispatch=DispatchSettings(backoff_initial_s=0.01))
    envoy = subprocess.Popen([str(envoy_binary()), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
                              "--log-level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with ThreadServer(create_app(settings), batch_port):
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=0.5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and envoy.poll() is None, "envoy did not become ready"
                time.sleep(0.05)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{listener}/v1", api_key="none")
            f = client.files.create(file=("in.jsonl", io.BytesIO(jsonl([chat_line("a", "1"), chat_line("b", "2")]))),
                                    purpose="batch")
            batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
            while batch.status != "completed":
                assert time.monotonic() < deadline + 20, batch
                time.sleep(0.05)
                batch = client.batches.retrieve(batch.id)
            assert len(client.files.content(batch.output_file_id).text.splitlines()) == 2
            with pytest.raises(openai.APIStatusError) as exc:  # oversize: a clean 413 through Envoy
                client.files.create(file=("big.jsonl", io.BytesIO(b"x" * 1_000_000)), purpose="batch")
            assert exc.value.status_code == 413
            # the catch-all still needs the picker: with none running it fails closed (503)
            assert httpx.post(f"http://127.0.0.1:{listener}/v1/chat/completions", json={}).status_code == 503
    finally:
        envoy.terminate()
        envoy.wait(10)


def test_gateway_with_batch_declares_a_sheddable_objective_once(tmp_path):
    batch = resolve_batch(BatchSettings(), "http://127.0.0.1:8080", tmp_path)
    assert batch.port and batch.state_dir == tmp_path / "batch" and batch.gateway_url == "http://127.0.0.1:8080"
    gw = gateway_with_batch(GatewaySettings(), batch)
    assert gw.batch_port == batch.port
    assert [(o.name, o.priority) for o in gw.epp.objectives] == [("batch", -1)]
    own = GatewaySettings(epp=EppSettings(objectives=[ObjectiveSettings(name="batch", priority=-5)]))
    assert [(o.name, o.priority) for o in gateway_with_batch(own, batch).epp.objectives] == [("batch", -5)]
    assert GatewaySettings().epp.objectives == []  # the input is not mutated


def _args(**kw):
    base = {flag: None for flag in stack_cli._FLAG_KEYS}
    base.update(compiled=False, no_gateway=False, no_batch=False)
    base.update(kw)
    return argparse.Namespace(**base)


def test_stack_config_and_up_flags(tmp_path):
    state = StateFile(tmp_path / "stack.json")
    config = load_config(None, stack_cli._overrides(_args()))
    assert config.batch.enabled
    batch = stack_cli._batch_settings(config, state)
    assert batch.gateway_url == f"http://127.0.0.1:{config.gateway.port}" and batch.state_dir == tmp_path / "batch"
    assert stack_cli._batch_factory(batch) is not None
    assert stack_cli._batch_settings(load_config(None, stack_cli._overrides(_args(no_batch=True))), state) is None
    assert stack_cli._batch_settings(load_config(None, stack_cli._overrides(_args(no_gateway=True))), state) is None
    path = tmp_path / "stack.yaml"
    path.write_text("batch: {enabled: true, port: 18555, dispatch: {max_concurrency: 4}}\n")
    config = load_config(path)
    assert stack_cli._batch_settings(config, state).port == 18555
    path.write_text("batch: {dispatch: {max_concurency: 4}}\n")
    with pytest.raises(ConfigError, match="unknown key 'batch.dispatch.max_concurency'"):
        load_config(path)


def test_public_surface():
    import inferstack.batch as batch_pkg

    assert sorted(batch_pkg.__all__) == [
        "BATCH_ENDPOINTS", "BatchService", "BatchServiceStatus", "BatchSettings", "BatchStore", "DispatchSettings",
        "Dispatcher", "LineError", "ParsedLine", "batch_objective", "create_app", "load_batch_settings",
        "parse_batch_input"]
    assert batch_pkg.batch_objective(DispatchSettings()) == {"name": "batch", "priority": -1}


def test_up_with_keys_wires_them_into_the_picker_and_the_batch_service(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text("- {key: sk-team-a-0123456789, tenant: team-a}\n")
    state = StateFile(tmp_path / "stack.json")
    config = load_config(None, stack_cli._overrides(_args(auth_file=str(keys), insecure=False)))
    assert config.auth is not None and config.auth.file == keys
    batch = stack_cli._batch_settings(config, state)
    assert batch.auth_file == keys and batch.gateway_key_file == tmp_path / "service-key"
    factory = stack_cli._gateway_factory(config, batch)
    gateway = factory(tmp_path / "endpoints.json", tmp_path / "gateway")
    assert gateway.settings.epp.auth_file == keys and gateway.settings.epp.service_key_file == batch.gateway_key_file
    stack_cli._write_service_key(state)
    key = batch.gateway_key_file.read_text().strip()
    assert key.startswith("sk-inferstack-") and (batch.gateway_key_file.stat().st_mode & 0o777) == 0o600
    # beyond loopback: keys, or --insecure said out loud
    with pytest.raises(ConfigError, match="without API keys: set auth.file"):
        load_config(None, {"gateway": {"listen_host": "0.0.0.0"}})
    assert load_config(None, stack_cli._overrides(_args(insecure=True)) | {"gateway": {"listen_host": "0.0.0.0",
                                                                                       "insecure": True}})
    assert load_config(None, {"gateway": {"listen_host": "0.0.0.0"}, "auth": {"file": str(keys)}}).auth
