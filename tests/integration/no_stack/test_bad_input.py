"""Bad input to `inferstack up` gets a clear message (exit 2), starts nothing, and loses nothing.
(A busy replica port beside a running stack: ``test_serving.py::test_busy_port``.)"""

from __future__ import annotations

import os
import re

import pytest
import yaml
from stackutil import run_cli

from inferstack.process import free_port_block, group_alive

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, INFERSTACK_STATE=str(tmp_path / "state"))


def _up(env, *args, timeout=300):
    return run_cli("up", "--detach", *args, env=env, timeout=timeout, check=False)


def test_invalid_config_names_the_key(tmp_path, env):
    config = tmp_path / "bad.yaml"
    config.write_text("replicas: -1\nengine: {kv_cache_gb: 2}\n")
    proc = _up(env, "--config", str(config))
    assert proc.returncode == 2
    assert "'replicas' has value -1" in proc.stderr
    assert "unknown key 'engine.kv_cache_gb'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_invalid_speculative_settings(env):
    proc = _up(env, "--spec", "eagle3", "--no-gateway")
    assert proc.returncode == 2
    assert "needs an EAGLE head" in proc.stderr and "--spec-model" in proc.stderr
    proc = _up(env, "--spec-tokens", "0", "--no-gateway")
    assert proc.returncode == 2 and "num_speculative_tokens" in proc.stderr


def test_unknown_model_path(tmp_path, env):
    proc = _up(env, "--model", str(tmp_path / "no-such-model"), "--no-gateway")
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    proc = _up(env, "--model", "not-a-model", "--no-gateway")
    assert proc.returncode == 2 and "is unknown" in proc.stderr


def test_a_replica_that_fails_to_start_shows_its_log_tail(tmp_path, env):
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump({
        "gateway": {"enabled": False},
        "speculative": {"method": "none"},
        "engine": {"base_port": free_port_block(1, start=19500), "extra_args": ["--no-such-flag"]},
    }))
    proc = _up(env, "--config", str(config))
    assert proc.returncode == 2
    assert re.search(r"replica r0 .* exited with code \d+ while starting", proc.stderr), proc.stderr
    assert "last lines of its log" in proc.stderr
    assert "--no-such-flag" in proc.stderr  # vLLM's own complaint, from the log tail
    supervisor = [int(p) for p in re.findall(r"pid (\d+)", proc.stdout)]
    assert supervisor and not any(group_alive(pid) for pid in supervisor)
    assert not _processes_with_arg("--no-such-flag")
    assert run_cli("status", env=env, check=False).returncode == 1


def _processes_with_arg(arg: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if arg.encode() in fh.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def test_a_busy_gateway_port_fails_before_any_replica_starts(tmp_path, env):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = _up(env, "--gateway-port", str(port), "--base-port", str(free_port_block(2, start=19600)))
    assert proc.returncode == 2
    assert f"gateway listener port 127.0.0.1:{port} is already in use" in proc.stderr
    # Checked up front: no replica was started (no replica log was even created).
    assert not list((tmp_path / "state").glob("logs/replica-*.log"))
