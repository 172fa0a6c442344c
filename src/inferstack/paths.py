"""Where inferstack keeps things on disk.

- the per-user cache (``$INFERSTACK_CACHE``, else ``$XDG_CACHE_HOME/inferstack``, else
  ``~/.cache/inferstack``) holds the heavy environments, the prepared models and the bundled LoRA
  adapter, keyed by their pinned versions so a fresh clone (and CI) reuses them;
- the run state (``$INFERSTACK_STATE``, else ``~/.local/state/inferstack``) holds the detached
  stack's state file and process logs.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["adapters_dir", "cache_dir", "state_dir", "envs_dir", "models_dir"]


def cache_dir() -> Path:
    env = os.environ.get("INFERSTACK_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "inferstack"


def state_dir() -> Path:
    env = os.environ.get("INFERSTACK_STATE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "inferstack"


def envs_dir() -> Path:
    return cache_dir() / "envs"


def models_dir() -> Path:
    return cache_dir() / "models"


def adapters_dir() -> Path:
    return cache_dir() / "adapters"
