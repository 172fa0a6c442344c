"""Helpers shared by the integration tests (imported by conftest and the test modules)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["RunningStack", "chat", "free_port_block", "free_ports", "run_cli"]


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


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports chosen by the kernel."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


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
        return json.loads(run_cli("status", "--json", env=self.env).stdout)

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
