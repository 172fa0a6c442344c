"""LoRA settings (the ``lora:`` section of the stack config) -> vLLM flags and environment.

Example::

    lora:
      enabled: true
      max_loras: 2          # distinct adapters in one batch (vLLM's LoRA slots)
      max_lora_rank: 16
      max_cpu_loras: 4      # adapters kept loaded in memory (LRU); >= max_loras
      adapters:             # served from start; more can be loaded at runtime
        json-mode: ~/.cache/inferstack/adapters/json-mode
        sql: some-org/sql-lora

Invariants, checked before any process starts:

- adapter names are what vLLM and the picker can tell apart: no comma (vLLM joins the adapter
  names with ',' in ``vllm:lora_requests_info``), no whitespace, no '=';
- a name differs from the base model's served name (vLLM answers 400 "conflicts with a served
  base model"), checked in ``to_vllm_args`` where that name is known;
- ``max_cpu_loras >= max_loras`` (vLLM's own rule) and the static adapters fit in
  ``max_cpu_loras`` (beyond it vLLM keeps evicting and reloading them);
- a source is a folder holding ``adapter_config.json`` (made absolute: a replica runs in another
  directory) or a hub id ``org/name``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inferstack.errors import ConfigError

__all__ = ["ADAPTER_NAME_PATTERN", "LoraSettings", "MaxLoraRank", "check_adapter_name", "resolve_adapter_source"]

# vLLM's LoRAConfig.max_lora_rank accepts exactly these (vllm/config/lora.py, MaxLoRARanks).
MaxLoraRank = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512]

ADAPTER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_NAME = re.compile(ADAPTER_NAME_PATTERN)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_adapter_name(name: str) -> str:
    """``name`` if vLLM and the picker can serve it under that name, else ValueError saying why."""
    if not _NAME.match(name):
        raise ValueError(
            f"adapter name {name!r} is not valid: use 1-128 letters, digits and . _ - : / "
            f"starting with a letter or digit (no comma: vLLM lists running adapters comma-separated)"
        )
    return name


def resolve_adapter_source(source: str, base_dir: Path | None = None) -> str:
    """What vLLM gets as the adapter's path: an absolute folder holding ``adapter_config.json``,
    or a hub id ``org/name`` unchanged. Relative folders are taken from ``base_dir`` (default: the
    current directory). ValueError says what was expected."""
    # vLLM's own order (vllm/lora/utils.py get_adapter_absolute_path): absolute, ~, an existing
    # relative folder, else a hub id. Checked here so a typo fails before a replica starts.
    looks_local = source.startswith(("/", "./", "../", "~"))
    folder = Path(source).expanduser()
    if not folder.is_absolute():
        folder = (base_dir or Path.cwd()) / folder
    if looks_local or folder.exists() or not _HUB_ID.match(source):
        if not (folder / "adapter_config.json").is_file():
            what = "has no adapter_config.json" if folder.is_dir() else "does not exist"
            raise ValueError(
                f"folder {folder} {what}; expected a PEFT LoRA folder "
                f"(adapter_config.json + adapter_model.safetensors) or a hub id org/name"
            )
        return str(folder.resolve())
    return source


class LoraSettings(BaseModel):
    """LoRA adapters on every replica: vLLM's LoRA flags, static adapters and the runtime API."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description="Serve LoRA adapters: --enable-lora, and vLLM's runtime load/unload API "
        "(VLLM_ALLOW_RUNTIME_LORA_UPDATING) so adapters can be added to running replicas.",
    )
    max_loras: int = Field(
        2, ge=1, description="--max-loras: distinct adapters in one batch (the replica's LoRA slots, "
        "reported as max_lora in vllm:lora_requests_info)."
    )
    max_lora_rank: MaxLoraRank = Field(
        16, description="--max-lora-rank: the largest adapter rank accepted (1, 8, 16, 32, 64, 128, "
        "256, 320 or 512); a larger adapter is refused at load. Smaller saves memory."
    )
    max_cpu_loras: int | None = Field(
        None, ge=1, description="--max-cpu-loras: adapters kept loaded in memory, least recently used "
        "evicted (reloaded from its source on the next request); >= max_loras. None: max_loras."
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Adapters served from start, name -> local folder or hub id org/name (vLLM "
        "--lora-modules); /v1/models lists each with the base model as parent.",
    )

    @field_validator("adapters")
    @classmethod
    def _check_adapters(cls, adapters: dict[str, str]) -> dict[str, str]:
        resolved = {}
        for name, source in adapters.items():
            check_adapter_name(name)
            try:
                resolved[name] = resolve_adapter_source(source)
            except ValueError as exc:
                raise ValueError(f"adapter '{name}' has source {source!r}: {exc}") from exc
        return resolved

    @model_validator(mode="after")
    def _check_slots(self) -> LoraSettings:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) cannot be below max_loras ({self.max_loras})")
        if self.adapters and not self.enabled:
            raise ValueError("adapters are listed but enabled is false; set enabled: true to serve them")
        if len(self.adapters) > self.cpu_slots:
            raise ValueError(
                f"{len(self.adapters)} adapters listed but only {self.cpu_slots} fit in memory "
                f"(max_cpu_loras, default max_loras); raise max_cpu_loras or list fewer"
            )
        return self

    @property
    def cpu_slots(self) -> int:
        """Adapters a replica keeps loaded at once (vLLM's default for max_cpu_loras is max_loras)."""
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras

    def to_vllm_args(self, served_model_name: str) -> list[str]:
        """vLLM flags for one replica serving ``served_model_name``; ``[]`` when LoRA is off."""
        if not self.enabled:
            return []
        if served_model_name in self.adapters:
            raise ConfigError(
                f"config 'lora.adapters' has adapter '{served_model_name}', the base model's served "
                f"name; vLLM refuses it (conflicts with a served base model): rename the adapter"
            )
        argv = ["--enable-lora", "--max-loras", str(self.max_loras), "--max-lora-rank", str(self.max_lora_rank)]
        if self.max_cpu_loras is not None:
            argv += ["--max-cpu-loras", str(self.max_cpu_loras)]
        if self.adapters:
            # One flag, all modules after it: vLLM's parser replaces the list on each repeat. The
            # JSON form carries base_model_name, which /v1/models shows as the adapter's parent.
            argv.append("--lora-modules")
            argv += [
                json.dumps({"name": name, "path": path, "base_model_name": served_model_name},
                           separators=(",", ":"))
                for name, path in self.adapters.items()
            ]
        return argv

    def vllm_env(self) -> dict[str, str]:
        """Environment for one replica: the runtime adapter API is on whenever LoRA is."""
        return {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true"} if self.enabled else {}
