"""The stack configuration: one YAML file, typed and validated; CLI flags override it.

Example (every key optional)::

    model: smollm2-135m-instruct      # bundled name, local HF folder, or hub id org/name
    replicas: 2
    speculative: {method: ngram, num_speculative_tokens: 6, prompt_lookup_max: 5}
    engine: {max_model_len: 2048, kv_cache_gib: 1, base_port: 8101}

Unknown keys are errors, so a misspelt key never silently vanishes. Errors name the key, the bad
value and what would be valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferstack.engine.settings import EngineSettings
from inferstack.engine.speculative import SpeculativeSettings
from inferstack.errors import ConfigError

__all__ = ["StackConfig", "load_config", "format_validation_error"]


class StackConfig(BaseModel):
    """Everything `inferstack up` needs."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("smollm2-135m-instruct", description="Bundled name, local folder or hub id.")
    served_model_name: str | None = Field(None, description="Name clients use (default: derived).")
    replicas: int = Field(1, ge=1, le=64, description="Number of vLLM replicas.")
    engine: EngineSettings = Field(default_factory=EngineSettings)
    speculative: SpeculativeSettings = Field(
        default_factory=SpeculativeSettings, description="Speculative decoding (default: ngram)."
    )


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{source}: unknown key '{key}'")
            continue
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" has value {value!r};"
        lines.append(f"{source}: '{key}'{shown} {err['msg']}")
    return "\n".join(lines)


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> StackConfig:
    """Load the YAML file (if any), deep-merge ``overrides`` (from CLI flags), validate."""
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config file '{path}': {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
        data = loaded or {}
    if overrides:
        data = _merge(data, overrides)
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
