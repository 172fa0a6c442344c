"""The running stack's state file: what ``status`` shows and ``down`` stops.

Written atomically (temp file + rename) by the supervisor on every lifecycle transition, so a
reader never sees half a file. Lives at ``state_dir()/stack.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from inferstack.paths import state_dir
from inferstack.process import pid_alive

__all__ = ["StateFile"]


class StateFile:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "stack.json"

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def live(self) -> dict[str, Any] | None:
        """The state of a stack whose supervisor still runs, else None (stale files are ignored)."""
        data = self.read()
        if data and pid_alive(data.get("supervisor_pid")):
            return data
        return None
