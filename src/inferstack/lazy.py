"""Package doors that open lazily (PEP 562): a door names its public objects and the submodule
each lives in, and a submodule is imported when one of its objects is first asked for. Every CLI
call imports every command module, and through them the doors: a door that imported its heavy
parts at once (grpc and the picker, the supervisor, matplotlib, Starlette) cost each
`inferstack status` ~0.8 s of the ~2 s it took."""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """The module ``__getattr__`` of ``package``: ``exports`` maps a name to its submodule."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
