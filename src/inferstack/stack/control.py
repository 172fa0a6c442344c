"""Requests to a running stack (`inferstack scale`, `inferstack reconfigure`): a file queue.

The CLI drops one JSON file per request into ``run_dir/control/`` (written to a temp name, then
renamed, so the supervisor never reads half a file); the supervisor takes them in order on its
next tick, deletes them, and answers in the state file under ``requests[<id>]`` with ``ok`` and a
``message``. Files, like the endpoints file, keep the stack inspectable with ``ls`` and ``cat`` and
need no port of their own.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ControlRequest", "control_dir", "submit_request", "take_requests"]


@dataclass(frozen=True)
class ControlRequest:
    id: str
    action: str  # scale | reconfigure
    payload: dict[str, Any]


def control_dir(run_dir: Path) -> Path:
    return run_dir / "control"


def submit_request(run_dir: Path, action: str, payload: dict[str, Any]) -> str:
    """Queue a request for the supervisor; returns its id (look for it in the state file)."""
    folder = control_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    request_id = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
    tmp = folder / f".{request_id}.tmp"
    tmp.write_text(json.dumps({"id": request_id, "action": action, "payload": payload}))
    os.replace(tmp, folder / f"{request_id}.json")
    return request_id


def take_requests(run_dir: Path) -> Iterator[ControlRequest]:
    """The queued requests, oldest first; each file is removed as it is taken. A file that is not
    a request (hand-written, truncated) is dropped with a request of action ``invalid``."""
    folder = control_dir(run_dir)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            request = ControlRequest(str(data["id"]), str(data["action"]), dict(data.get("payload") or {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            request = ControlRequest(path.stem, "invalid", {"error": f"unreadable request file {path.name}: {exc}"})
        path.unlink(missing_ok=True)
        yield request
