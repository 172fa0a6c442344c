"""Helpers shared by the integration tests (imported by conftest and the test modules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml
from test_gateway_support import wait_until

from inferstack.engine.metrics import fetch_figures
from inferstack.process import free_port_block, free_ports
from inferstack.stack.state import StateFile
from inferstack.stack.status import StackStatus

__all__ = ["BackgroundLoad", "RunningStack", "chat", "detached_stack", "generated_tokens", "interruptible", "run_cli",
           "wait_until"]


def interruptible() -> None:
    """``preexec_fn`` for a child the test will Ctrl-C: a shell that starts a job in the background
    (`make test &`, some CI runners) makes SIGINT ignored for the whole tree, and Python then
    installs no KeyboardInterrupt handler; restore the default as a terminal's Ctrl-C would see it."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600,
            check: bool = True, cpus: set[int] | None = None) -> subprocess.CompletedProcess[str]:
    """``inferstack ARGS``; ``cpus``: the CPU affinity it runs with (a stack plans its replicas' cores
    within it, as in a container's cpuset)."""
    proc = subprocess.run(
        [sys.executable, "-m", "inferstack", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"inferstack {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
            f"stderr:\n{proc.stderr}"
        )
    return proc


def generated_tokens(replica_url: str) -> float:
    """Tokens the replica generated since it started (its vLLM counter; 0 when unreachable)."""
    figures = fetch_figures(replica_url, timeout_s=5.0)
    return figures.generation_tokens if figures else 0.0


def chat(base_url: str, model: str, content: str, max_tokens: int = 48, **extra) -> dict:
    response = httpx.post(
        f"{base_url}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}],
              "max_tokens": max_tokens, "temperature": 0, **extra},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()


@dataclass
class RunningStack:
    base_url: str
    replica_urls: list[str]
    served_model: str
    model_path: Path
    state_dir: Path
    env: dict[str, str]

    def status(self) -> dict:
        """`inferstack status --json` (the CLI's contract; ~2 s of CPU a call: poll with ``state``)."""
        return json.loads(run_cli("status", "--json", env=self.env).stdout)

    def state(self) -> StackStatus:
        """The supervisor's published status, read in-process (what `status` prints, minus live metrics)."""
        data = StateFile(self.state_dir / "stack.json").live()
        assert data is not None, f"no stack runs in {self.state_dir}"
        return data

    def wait_for(self, cond: Callable[[StackStatus], bool], timeout_s: float, what: str) -> StackStatus:
        """The first published status that meets ``cond`` (polled every 0.2 s), or an AssertionError
        naming ``what`` with the stack's events."""
        deadline = time.monotonic() + timeout_s
        while True:
            data = self.state()
            if cond(data):
                return data
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached in {timeout_s:.0f}s; events: "
                                     f"{[e.message for e in data.events]}")
            time.sleep(0.2)

    @classmethod
    def from_status(cls, state_dir: Path, env: dict[str, str]) -> RunningStack:
        data = json.loads(run_cli("status", "--json", env=env).stdout)
        return cls(
            base_url=data["base_url"],
            replica_urls=[r["url"] for r in data["replicas"]],
            served_model=data["model"],
            model_path=Path(data["model_source"]),
            state_dir=state_dir,
            env=env,
        )


@contextmanager
def detached_stack(state_dir: Path, config: dict, up_output: list[str] | None = None,
                   cpus: set[int] | None = None) -> Iterator[RunningStack]:
    """A stack from `inferstack up --detach` in its own state dir, with ``config`` and its gateway on
    free ports, stopped with `inferstack down` at exit; `up`'s stdout goes to ``up_output``; ``cpus``:
    the cores it may use (its supervisor inherits the affinity)."""
    env = dict(os.environ, INFERSTACK_STATE=str(state_dir))
    listener, admin, grpc_port, metrics = free_ports(4)
    pickers = int(config.get("gateway", {}).get("pickers", 1))
    if pickers > 1:  # picker i on each + i: a block, outside the replicas' ports
        grpc_port = free_port_block(2 * pickers, start=26000)
        metrics = grpc_port + pickers
    path = state_dir / "stack-under-test.yaml"
    gateway = dict(config.get("gateway", {}), port=listener, admin_port=admin)
    gateway["epp"] = dict(gateway.get("epp", {}), grpc_port=grpc_port, metrics_port=metrics)
    path.write_text(yaml.safe_dump({**config, "gateway": gateway}))
    up = run_cli("up", "--detach", "--config", str(path), env=env, timeout=900, cpus=cpus)
    if up_output is not None:
        up_output.append(up.stdout)
    try:
        yield RunningStack.from_status(state_dir, env)
    finally:
        run_cli("down", env=env, timeout=300, check=False)


@dataclass
class BackgroundLoad:
    """``workers`` threads sending short chat completions through ``base_url`` back to back until
    stopped; every request that fails (transport error or non-200) is kept with its reason, and
    every request's start (monotonic) and outcome (status code or error) in ``results``."""

    base_url: str
    model: str
    workers: int = 2
    max_tokens: int = 24
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    results: list[tuple[float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> BackgroundLoad:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(180)

    def _run(self, worker: int) -> None:
        n = 0
        with httpx.Client(timeout=180) as client:
            while not self._stop.is_set():
                n += 1
                t0 = time.monotonic()
                try:
                    r = client.post(f"{self.base_url}/chat/completions", json={
                        "model": self.model, "max_tokens": self.max_tokens, "temperature": 0,
                        "messages": [{"role": "user", "content": f"Worker {worker}, request {n}: name a tree."}]})
                    self.results.append((t0, r.status_code))
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.results.append((t0, repr(exc)))
                    self.failures.append(repr(exc))
                    time.sleep(0.2)
