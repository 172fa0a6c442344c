"""One way to read every YAML config of inferstack (stack, EPP, render settings).

``read_yaml_mapping`` turns OSError/YAMLError/"not a mapping" into ConfigError naming the file;
``validate`` turns a pydantic ValidationError into one ConfigError line per problem, naming the
key, the bad value and what is valid: ``stack.yaml: 'replicas' has value 0; Input should be
greater than or equal to 1`` or ``stack.yaml: unknown key 'engine.kv_cache_gb'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from inferstack.errors import ConfigError

__all__ = ["format_validation_error", "read_yaml_mapping", "validate"]

M = TypeVar("M", bound=BaseModel)


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The mapping at the top of a YAML file (an empty file is an empty mapping)."""
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} '{path}': {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} '{path}' is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} '{path}' must be a mapping at the top level, not {type(loaded).__name__}")
    return loaded


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
            continue
        if err["type"] == "missing":  # its "input" is the parent section, not a value
            lines.append(f"{source}: '{key}' Field required")
            continue
        shown = repr(err.get("input"))
        # A whole section as the value (model-level checks) is noise beyond a short one.
        shown = f" has value {shown};" if len(shown) <= 80 else ""
        lines.append(f"{source}: '{key}'{shown} {err['msg']}")
    return "\n".join(lines)


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc
