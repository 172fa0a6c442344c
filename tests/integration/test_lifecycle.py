"""A second, detached stack without speculation: lossless speculation, then `down` leaves nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import yaml
from stackutil import RunningStack, chat, run_cli

from inferstack.process import free_port_block, group_alive

pytestmark = pytest.mark.integration

PROMPTS = [
    "Repeat exactly: The cat sat on the mat. The cat sat on the mat. The cat sat on the mat.",
    "Copy this list: apples, pears, plums, apples, pears, plums, apples, pears, plums.",
    "What is the capital of France? Answer in one sentence.",
    "Write the numbers from 1 to 20 separated by commas.",
]


@pytest.fixture(scope="module")
def plain_stack(engine_python, tmp_path_factory) -> Iterator[RunningStack]:
    state_dir = tmp_path_factory.mktemp("plain-state")
    env = dict(os.environ, INFERSTACK_STATE=str(state_dir))
    config = state_dir / "plain.yaml"
    config.write_text(yaml.safe_dump({
        "replicas": 1, "speculative": {"method": "none"}, "gateway": {"enabled": False},
        "engine": {"base_port": free_port_block(1, start=19100), "dtype": "float32"},
    }))
    run_cli("up", "--detach", "--config", str(config), env=env, timeout=900)
    try:
        yield RunningStack.from_status(state_dir, env)
    finally:
        run_cli("down", env=env, timeout=300, check=False)


def test_ngram_speculation_is_lossless(stack, plain_stack):
    assert plain_stack.status()["speculative"] == "none"
    for prompt in PROMPTS:
        with_spec = chat(f"{stack.replica_urls[0]}/v1", stack.served_model, prompt, max_tokens=64)
        without = chat(f"{plain_stack.replica_urls[0]}/v1", plain_stack.served_model, prompt, max_tokens=64)
        assert with_spec["choices"][0]["message"]["content"] == without["choices"][0]["message"]["content"], prompt


def test_a_second_up_in_the_same_state_dir_is_refused(plain_stack):
    proc = run_cli("up", "--detach", "--replicas", "1", env=plain_stack.env, check=False)
    assert proc.returncode == 2
    assert "already running" in proc.stderr


def test_down_leaves_no_process(plain_stack):
    data = plain_stack.status()
    pids = [r["pid"] for r in data["replicas"]] + [data["supervisor_pid"]]
    run_cli("down", env=plain_stack.env, timeout=300)
    assert not any(group_alive(pid) for pid in pids), pids
    assert not (plain_stack.state_dir / "stack.json").exists()
    proc = run_cli("status", "--json", env=plain_stack.env, check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["running"] is False


def test_down_while_starting_stops_everything(tmp_path):
    import subprocess
    import sys
    import time

    env = dict(os.environ, INFERSTACK_STATE=str(tmp_path / "state"))
    config = tmp_path / "starting.yaml"
    config.write_text(yaml.safe_dump({
        "replicas": 1, "gateway": {"enabled": False},
        "engine": {"base_port": free_port_block(1, start=19700)},
    }))
    up = subprocess.Popen([sys.executable, "-m", "inferstack", "up", "--detach", "--config", str(config)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state_file = tmp_path / "state" / "stack.json"
    deadline = time.monotonic() + 60
    pids: list[int] = []
    while time.monotonic() < deadline and not pids:
        if state_file.exists():
            data = json.loads(state_file.read_text())
            pids = [r["pid"] for r in data["replicas"] if r["pid"]] + [data["supervisor_pid"]]
        time.sleep(0.2)
    assert pids, "the supervisor never published its replicas"
    run_cli("down", env=env, timeout=120)
    _, stderr = up.communicate(timeout=120)
    assert up.returncode != 0 and "exited with code" in stderr
    assert not any(group_alive(pid) for pid in pids), pids
    assert not state_file.exists()
