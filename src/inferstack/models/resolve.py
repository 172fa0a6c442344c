"""Resolve what the user typed as ``--model`` into something vLLM can serve.

Accepted, in this order:
1. the bundled model's served name (``smollm2-135m-instruct``) or ``bundled``;
2. a local folder holding a Hugging Face model (``config.json`` inside);
3. a Hugging Face hub id ``org/name`` (the only case that may touch the hub).

Anything else is a ModelNotFoundError that lists what would be valid. No check here touches
the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from inferstack.errors import ModelNotFoundError
from inferstack.models.bundled import BUNDLED

__all__ = ["ResolvedModel", "resolve_model"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ResolvedModel:
    source: str  # what vLLM gets as --model: a folder path or a hub id
    served_name: str  # what clients send as "model"
    kind: str  # "bundled" | "local" | "hub"

    @property
    def local_path(self) -> Path | None:
        return Path(self.source) if self.kind != "hub" else None


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).expanduser().exists()


def resolve_model(ref: str | None, served_name: str | None = None) -> ResolvedModel:
    if ref in (None, "", "bundled", BUNDLED.served_name):
        if not BUNDLED.is_prepared():
            raise ModelNotFoundError(
                f"the bundled model '{BUNDLED.served_name}' is not prepared yet "
                f"(expected at {BUNDLED.folder}); run `make setup` or `inferstack models prepare`"
            )
        return ResolvedModel(str(BUNDLED.folder), served_name or BUNDLED.served_name, "bundled")
    assert ref is not None
    if _looks_like_path(ref):
        folder = Path(ref).expanduser().resolve()
        if not folder.is_dir():
            raise ModelNotFoundError(f"model folder '{ref}' does not exist")
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(
                f"model folder '{ref}' has no config.json; a Hugging Face model folder is expected "
                f"(config.json, weights, tokenizer)"
            )
        return ResolvedModel(str(folder), served_name or folder.name, "local")
    if _HUB_ID.match(ref):
        return ResolvedModel(ref, served_name or ref, "hub")
    raise ModelNotFoundError(
        f"model '{ref}' is unknown: give '{BUNDLED.served_name}' (bundled), a local model folder, "
        f"or a Hugging Face id like 'org/name' (see `inferstack models list`)"
    )
