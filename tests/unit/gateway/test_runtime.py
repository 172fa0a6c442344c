import socket

import pytest

import inferstack.gateway as gateway_pkg
from inferstack.errors import PortInUseError, ReplicaStartError
from inferstack.gateway.runtime import Gateway
from inferstack.gateway.settings import EppSettings, GatewaySettings
from inferstack.process import free_port, port_is_free


def _settings(port: int | None = None) -> GatewaySettings:
    return GatewaySettings(port=port or free_port(), admin_port=free_port(),
                           epp=EppSettings(grpc_port=free_port(), metrics_port=free_port()), ready_timeout_s=5)


def test_busy_listener_port_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        gw = Gateway(_settings(port), endpoints=["127.0.0.1:1"], run_dir=tmp_path)
        with pytest.raises(PortInUseError, match=f"gateway listener port 127.0.0.1:{port} is already in use"):
            gw.start()
        assert gw.status().envoy.pid is None


def test_a_process_exiting_during_start_reports_its_log(tmp_path):
    script = tmp_path / "fake_python"
    script.write_text("#!/bin/sh\necho 'epp: cannot start, port exploded' >&2\nexit 3\n")
    script.chmod(0o755)
    gw = Gateway(_settings(), endpoints=["127.0.0.1:1"], run_dir=tmp_path, python=script)
    with pytest.raises(ReplicaStartError, match="exited with code 3") as err:
        gw.start()
    assert "port exploded" in err.value.log_tail
    assert gw.state == "failed" and gw.status().epp.state == "stopped"


def test_configs_written_for_an_endpoints_file(tmp_path):
    eps = tmp_path / "endpoints.json"
    gateway_pkg.write_endpoints_file(eps, ["127.0.0.1:8101"])
    gw = Gateway(_settings(), endpoints_file=eps, run_dir=tmp_path / "run")
    (epp_yaml,), envoy_yaml = gw.write_configs()
    epp = gateway_pkg.load_epp_settings(epp_yaml)
    assert epp.discovery.kind == "file" and epp.eds_path == tmp_path / "run" / "eds" / "eds.json"
    assert "127.0.0.1" in (tmp_path / "run" / "eds" / "eds.json").read_text()
    assert envoy_yaml.exists()


def test_the_gateway_passes_its_hold_to_the_epp_and_sizes_envoys_timer(tmp_path):
    import yaml

    settings = _settings().model_copy(update={"hold": gateway_pkg.HoldSettings(enabled=True, timeout_s=40)})
    gw = Gateway(settings, endpoints=["127.0.0.1:8101"], run_dir=tmp_path)
    (epp_yaml,), envoy_yaml = gw.write_configs()
    epp = gateway_pkg.load_epp_settings(epp_yaml)
    assert epp.hold.enabled and epp.hold.timeout_s == 40
    assert epp.envoy_admin_port == settings.admin_port  # where it sees Envoy load new endpoints
    hcm = yaml.safe_load(envoy_yaml.read_text())["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"][0]["typed_config"]
    assert hcm["http_filters"][0]["typed_config"]["max_message_timeout"] == "45.000s"


def test_exactly_one_endpoint_source():
    with pytest.raises(ValueError):
        Gateway(GatewaySettings())
    with pytest.raises(ValueError):
        Gateway(GatewaySettings(), endpoints=["a:1"], endpoints_file="x")


def test_public_surface():
    assert sorted(gateway_pkg.__all__) == ["EppSettings", "Gateway", "GatewaySettings", "GatewayStatus",
                                           "HELD_REQUESTS_METRIC", "HoldSettings", "REQUESTS_METRIC", "check_exposure",
                                           "epp_metrics_pages", "load_epp_settings", "write_endpoints_file"]
    for name in gateway_pkg.__all__:
        assert getattr(gateway_pkg, name)


def test_cli_registers_commands():
    import argparse

    from inferstack.commands import gateway as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["gateway", "--endpoints", "127.0.0.1:8101,127.0.0.1:8102", "--port", "8181"])
    assert args.port == 8181 and args.func is not None
    assert parser.parse_args(["epp", "--config", "x.yaml"]).config == "x.yaml"


def test_heal_restarts_the_dead_process_alone_with_backoff(tmp_path):
    """The EPP dies: only it is restarted (same command), Envoy keeps its pid; a second death within
    the backoff waits, then is restarted too (the clock is passed in: no sleeps). Real processes
    (sleep) stand in for Envoy and the EPP."""
    import time

    gw = Gateway(_settings(), endpoints=["127.0.0.1:1"], run_dir=tmp_path)
    gw.run_dir.mkdir(parents=True, exist_ok=True)
    started = []
    try:
        for name in ("epp", "envoy"):
            gw._spawn(name, ["sleep", "60"])
        gw.state = "running"
        now = time.monotonic()
        envoy_pid, epp = gw.procs["envoy"].pid, gw.procs["epp"].proc
        assert gw.heal(now) == []
        epp.kill()
        epp.wait()
        assert gw.heal(now) == ["epp"]
        assert gw.procs["envoy"].pid == envoy_pid and gw.procs["epp"].pid != epp.pid
        assert gw.procs["epp"].proc.args == ["sleep", "60"]
        started.append(epp)
        gw.procs["epp"].proc.kill()
        gw.procs["epp"].proc.wait()
        assert gw.heal(now + 0.4) == []  # within the 0.5 s delay after the first restart
        started.append(gw.procs["epp"].proc)
        assert gw.heal(now + 0.6) == ["epp"]
        started += [p.proc for p in gw.procs.values()]
        st = gw.status()
        assert st.epp.restarts == 2 and st.envoy.restarts == 0 and st.state == "running"
    finally:
        gw.stop()
    assert started and all(p.poll() is not None for p in started)


def test_two_pickers_get_their_own_ports_configs_and_logs(tmp_path):
    settings = _settings().model_copy(update={"pickers": 2})
    gw = Gateway(settings, endpoints=["127.0.0.1:8101"], run_dir=tmp_path)
    (first, second), _ = gw.write_configs()
    a, b = gateway_pkg.load_epp_settings(first), gateway_pkg.load_epp_settings(second)
    assert (b.grpc_port, b.metrics_port) == (a.grpc_port + 1, a.metrics_port + 1)
    assert a.peers and b.peers and a.eds_path == b.eds_path
    assert list(gw.log_paths) == ["epp", "epp-1", "envoy"]
    st = gw.status()
    assert [p.grpc_port for p in st.pickers] == [a.grpc_port, b.grpc_port] and st.epp == st.pickers[0]


def test_picker_ports_may_not_overlap():
    with pytest.raises(ValueError, match="overlap"):
        GatewaySettings(pickers=2, epp=EppSettings(grpc_port=9002, metrics_port=9003))
    with pytest.raises(ValueError, match="picker 1"):
        GatewaySettings(pickers=2, port=9003, epp=EppSettings(grpc_port=9002))


def test_a_status_from_before_several_pickers_lists_its_one_picker(tmp_path):
    st = Gateway(_settings(), endpoints=["127.0.0.1:8101"], run_dir=tmp_path).status().model_dump()
    del st["pickers"]  # what a stack started by an earlier version wrote
    old = gateway_pkg.GatewayStatus.model_validate(st)
    assert old.pickers == [old.epp]
