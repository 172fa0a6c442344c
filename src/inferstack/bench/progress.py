"""Follow inference-perf's log: stage boundaries (for attribution) and a live line per stage.

inference-perf logs ``<date time,ms> - <logger> - <LEVEL> - <message>`` lines; the ones we use:
``Stage K - run started``, ``Stage K - run completed|failed`` (K = -1 is the saturation probe of a
sweep), ``Generated load stages: [r1, r2, ...]`` and ERROR lines. :class:`StageTracker` turns
them into :class:`StageWindow` records (epoch seconds, from the log's own timestamps so pipe
delays do not shift them). Invariant: a window's ``end`` is set only by a completed/failed line;
a stage still open when the run stops is reported as not finished.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["StageTracker", "StageWindow", "parse_log_time"]

_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - (\S+) - (\w+) - (.*)$")
_STAGE = re.compile(r"^Stage (-?\d+) - run (started|completed|failed)")
_GENERATED = re.compile(r"^Generated load stages: \[(.*)\]")


class StageWindow(BaseModel):
    """When one inference-perf stage ran (epoch seconds), as its log says."""

    model_config = ConfigDict(extra="forbid")

    stage: int = Field(description="inference-perf stage id; -1 is a sweep's saturation probe.")
    rate: float | None = Field(default=None, description="Planned rate (QPS) or concurrency level.")
    start: float = Field(description="'run started' time (epoch s).")
    end: float | None = Field(default=None, description="'run completed/failed' time (epoch s).")
    status: Literal["running", "completed", "failed"] = Field(default="running", description="Outcome.")


def parse_log_time(stamp: str) -> float:
    """Epoch seconds of an inference-perf log timestamp (it logs local time)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


class StageTracker:
    """Feeds on log lines; thread-safe view of stage windows and error counts."""

    def __init__(self, planned_levels: list[float] | None = None) -> None:
        self.planned = list(planned_levels or [])
        self.windows: dict[int, StageWindow] = {}
        self.errors = 0
        self._lock = threading.Lock()

    def feed(self, line: str, now: float | None = None) -> StageWindow | None:
        """Consume one log line; returns the window it opened or closed, if any."""
        m = _LINE.match(line.rstrip("\n"))
        if not m:
            return None
        stamp, _logger, level, message = m.groups()
        try:
            t = parse_log_time(stamp)
        except ValueError:
            t = now if now is not None else time.time()
        with self._lock:
            if level in ("ERROR", "CRITICAL"):
                self.errors += 1
            if g := _GENERATED.match(message):
                self.planned = [float(x) for x in g.group(1).split(",") if x.strip()]
                return None
            s = _STAGE.match(message)
            if not s:
                return None
            stage, what = int(s.group(1)), s.group(2)
            if what == "started":
                rate = self.planned[stage] if 0 <= stage < len(self.planned) else None
                self.windows[stage] = StageWindow(stage=stage, rate=rate, start=t)
            elif stage in self.windows:
                w = self.windows[stage]
                w.end, w.status = t, ("completed" if what == "completed" else "failed")
            return self.windows.get(stage)

    def snapshot(self) -> list[StageWindow]:
        with self._lock:
            return [w.model_copy() for _, w in sorted(self.windows.items())]

    def current(self) -> StageWindow | None:
        with self._lock:
            open_ = [w for w in self.windows.values() if w.status == "running"]
            return max(open_, key=lambda w: w.start).model_copy() if open_ else None

    @property
    def total_stages(self) -> int:
        return len(self.planned)
