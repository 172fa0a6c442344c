"""Helpers shared by the integration tests (imported by conftest and the test modules)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["RunningStack", "chat", "interruptible", "run_cli"]


def interruptible() -> None:
    """``preexec_fn`` for a child the test will Ctrl-C: a shell that starts a job in the background
    (`make test &`, some CI runners) makes SIGINT ignored for the whole tree, and Python then
    installs no KeyboardInterrupt handler; restore the default as a terminal's Ctrl-C would see it."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
