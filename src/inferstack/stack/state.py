"""The running stack's state file: what ``status`` shows and ``down`` stops.

Written atomically (temp file + rename) by the supervisor on every lifecycle transition, so a
reader never sees half a file. Lives at ``state_dir()/stack.json``. Its content is a
``StackStatus`` (``stack/status.py``); a file of another schema version raises ``StateSchemaError``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from inferstack.paths import state_dir
from inferstack.process import pid_alive
from inferstack.stack.status import StackStatus, parse_status

__all__ = ["StateFile"]

_NO_FILE = object()


class StateFile:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "stack.json"

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    def write(self, status: StackStatus) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(status.model_dump_json(indent=2))
        os.replace(tmp, self.path)

    def _load(self) -> object:
        """The file's JSON; ``_NO_FILE`` without one (or an unreadable one: writes are atomic, so
        only a hand-edited file is)."""
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return _NO_FILE

    def read(self) -> StackStatus | None:
        """The status in the file; None without one (or an unreadable one); StateSchemaError for a
        file of another schema version."""
        data = self._load()
        return None if data is _NO_FILE else parse_status(data, str(self.path))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def live(self) -> StackStatus | None:
        """The state of a stack whose supervisor still runs, else None (stale files are ignored, of
        any schema: a file left by an older inferstack whose stack is gone is no error)."""
        data = self._load()
        if not isinstance(data, dict) or not pid_alive(data.get("supervisor_pid")):
            return None
        return parse_status(data, str(self.path))
