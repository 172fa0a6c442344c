"""Find Python interpreters by version, without hard-coding where they live.

Looks, in order, at ``pythonX.Y`` on PATH, pyenv's versions (``$PYENV_ROOT`` or ``pyenv root``),
and the usual system locations. Each candidate is asked for its version, so a shim that points
at another version is never trusted by name alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from inferstack.errors import SetupError

__all__ = ["Interpreter", "find_python"]

_KNOWN_MINORS = (11, 12, 13, 14)


@dataclass(frozen=True)
class Interpreter:
    path: Path
    version: tuple[int, int]

    @property
    def version_str(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


def _version_of(path: Path) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [str(path), "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _pyenv_root() -> Path | None:
    env = os.environ.get("PYENV_ROOT")
    if env:
        return Path(env)
    exe = shutil.which("pyenv")
    if exe:
        try:
            out = subprocess.run([exe, "root"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return Path(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    default = Path.home() / ".pyenv"
    return default if default.is_dir() else None


def _candidates(minor: int) -> list[Path]:
    found: list[Path] = []
    exe = shutil.which(f"python3.{minor}")
    if exe:
        found.append(Path(exe))
    root = _pyenv_root()
    if root and (root / "versions").is_dir():
        # Newest patch release first.
        versions = sorted(
            (p for p in (root / "versions").glob(f"3.{minor}.*") if p.name.replace(".", "").isdigit()),
            key=lambda p: tuple(int(x) for x in p.name.split(".")),
            reverse=True,
        )
        found.extend(v / "bin" / "python" for v in versions)
    for prefix in ("/usr/local/bin", "/usr/bin"):
        found.append(Path(prefix) / f"python3.{minor}")
    return [p for p in found if p.exists()]


def find_python(minimum: tuple[int, int], maximum: tuple[int, int] | None = None, *,
                purpose: str) -> Interpreter:
    """The lowest interpreter version with ``minimum <= version <= maximum``.

    Raises SetupError naming the versions wanted, what was looked at, and how to get one.
    """
    hi = maximum or (3, max(_KNOWN_MINORS))
    # The lowest version that satisfies: the one pinned wheels are most likely built for.
    wanted = [m for m in _KNOWN_MINORS if minimum[1] <= m <= hi[1]]
    looked: list[str] = []
    for minor in wanted:
        for path in _candidates(minor):
            looked.append(str(path))
            version = _version_of(path)
            if version and minimum <= version <= hi:
                return Interpreter(path=path, version=version)
    span = f"{minimum[0]}.{minimum[1]}" + (
        f"-{hi[0]}.{hi[1]}" if maximum else " or newer"
    )
    raise SetupError(
        f"{purpose} needs Python {span}, and none was found "
        f"(looked at: {', '.join(looked) or 'python3.X on PATH, pyenv versions, /usr/bin'}). "
        f"Install one (e.g. `pyenv install 3.{wanted[0]}` or `apt-get install python3.{wanted[0]}`) "
        f"and run `make setup` again."
    )
