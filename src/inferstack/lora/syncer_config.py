"""The lora-syncer's ConfigMap (``vLLMLoRAConfig``) -> the adapter set every replica should hold.

The format of the Gateway API Inference Extension's dynamic-lora-sidecar (``lora-syncer`` image,
up to GIE v1.4; removed in v1.5 for vLLM's filesystem resolver)::

    vLLMLoRAConfig:
      name: sql-loras                 # optional label
      host: localhost                 # optional; accepted, unused: the set goes to every replica
      port: 8000                      # likewise
      defaultBaseModel: smollm2-135m-instruct   # optional
      ensureExist:
        models:
        - id: sql-lora-v1             # the adapter's served name
          source: org/sql-lora        # hub id, or a folder (relative: to this file's folder)
          base-model: ...             # optional, overrides defaultBaseModel
      ensureNotExist:
        models:
        - id: sql-lora-v0
          source: org/sql-lora        # required by the sidecar, unused for unloading

Adapters in neither list are left alone, as the sidecar does. Stricter than the sidecar (it logs
and carries on): unknown keys, an id listed twice or in both lists, and a base model other than
the one served are errors that name the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inferstack.configfile import read_yaml_mapping, validate
from inferstack.errors import ConfigError
from inferstack.lora.settings import check_adapter_name, resolve_adapter_source

__all__ = ["DesiredAdapters", "load_syncer_config", "parse_syncer_config"]


@dataclass(frozen=True)
class DesiredAdapters:
    """What a replica should hold: ``ensure_exist`` name -> source (an absolute folder or a hub
    id), and the names in ``ensure_not_exist``. The two never share a name."""

    ensure_exist: Mapping[str, str]
    ensure_not_exist: frozenset[str]


class _Strict(BaseModel):
    # The sidecar ignores unknown keys: there a misspelt "ensureExists" silently loads nothing.
    model_config = ConfigDict(extra="forbid")


class _Adapter(_Strict):
    id: str = Field(description="The adapter's served name.")
    source: str = Field(description="Hub id or folder of the adapter.")
    base_model: str | None = Field(None, alias="base-model", description="Overrides defaultBaseModel.")


class _Absent(_Adapter):
    source: str = Field("", description="Required by the sidecar; unused for unloading.")


class _Present(_Strict):
    models: list[_Adapter] = Field(description="Adapters to load where missing.")


class _NotPresent(_Strict):
    models: list[_Absent] = Field(description="Adapters to unload where present.")


class _Body(_Strict):
    name: str | None = Field(None, description="A label for this config.")
    host: str | None = Field(None, description="The sidecar's model server; unused here.")
    port: int | None = Field(None, description="The sidecar's model server port; unused here.")
    default_base_model: str | None = Field(None, alias="defaultBaseModel", description="Base model of adapters.")
    ensure_exist: _Present | None = Field(None, alias="ensureExist", description="Adapters to load.")
    ensure_not_exist: _NotPresent | None = Field(None, alias="ensureNotExist", description="Adapters to unload.")


class _File(_Strict):
    config: _Body = Field(alias="vLLMLoRAConfig", description="The sidecar's base key.")


def load_syncer_config(path: Path, *, base_model: str | None = None) -> DesiredAdapters:
    """Read a ``vLLMLoRAConfig`` YAML file; relative adapter folders are taken from its folder."""
    data = read_yaml_mapping(path, "LoRA syncer config")
    return parse_syncer_config(data, str(path), base_dir=Path(path).parent, base_model=base_model)


def parse_syncer_config(
    data: dict[str, Any], source: str, *, base_dir: Path | None = None, base_model: str | None = None
) -> DesiredAdapters:
    """Validate ``data``; ``base_model`` (the served base model), when given, must match each
    adapter's base-model/defaultBaseModel. ConfigError messages start with ``source``."""
    body = validate(_File, data, source).config
    present = body.ensure_exist.models if body.ensure_exist else []
    absent = body.ensure_not_exist.models if body.ensure_not_exist else []
    ensure_exist: dict[str, str] = {}
    seen: dict[str, str] = {}
    for section, models in (("ensureExist", present), ("ensureNotExist", absent)):
        for i, model in enumerate(models):
            key = f"{source}: 'vLLMLoRAConfig.{section}.models.{i}"
            try:
                check_adapter_name(model.id)
            except ValueError as exc:
                raise ConfigError(f"{key}.id' {exc}") from exc
            if model.id in seen:
                raise ConfigError(f"{key}.id' has value {model.id!r}, already listed in {seen[model.id]}; "
                                  f"list each adapter once")
            seen[model.id] = section
            if section == "ensureExist":
                wanted = model.base_model or body.default_base_model
                if base_model is not None and wanted is not None and wanted != base_model:
                    field = "base-model" if model.base_model else "defaultBaseModel"
                    raise ConfigError(f"{key}' has {field} {wanted!r}; the replicas serve {base_model!r}")
                try:
                    ensure_exist[model.id] = resolve_adapter_source(model.source, base_dir)
                except ValueError as exc:
                    raise ConfigError(f"{key}.source' has value {model.source!r}: {exc}") from exc
    return DesiredAdapters(ensure_exist, frozenset(n for n, s in seen.items() if s == "ensureNotExist"))
