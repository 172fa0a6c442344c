"""Convert a GGUF checkpoint into a Hugging Face model folder (run by the ENGINE interpreter).

This file is executed as a script with the engine venv's Python (it needs torch + transformers +
gguf, which the light inferstack package must not import). It imports nothing from inferstack.

    python convert_gguf.py GGUF_FILE OUT_DIR [--dtype bfloat16]

Writes weights as safetensors, config, tokenizer and chat template into OUT_DIR.tmp, then renames
it to OUT_DIR, so a half-written folder is never mistaken for a prepared model. Prints one
progress line per step on stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path


def _step(message: str, started: float) -> None:
    print(f"[models] {message} ({time.monotonic() - started:.1f}s)", flush=True)


def convert(gguf_file: Path, out_dir: Path, dtype_name: str) -> None:
    started = time.monotonic()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    dtype = getattr(torch, dtype_name)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _step(f"reading tokenizer from {gguf_file.name}", started)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    _step("dequantizing weights (GGUF -> torch)", started)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent),
        gguf_file=gguf_file.name,
        dtype=dtype,
        # Unpacked dense weights: vLLM serves a plain checkpoint, not GGUF blocks.
        quantization_config=GgufConfig(dequantize=True),
    )
    _step(f"writing safetensors ({dtype_name}) and tokenizer", started)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    if not tokenizer.chat_template:
        raise SystemExit("the GGUF carries no chat template; cannot serve /v1/chat/completions")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    _step(f"model folder ready at {out_dir}", started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf_file", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local file never needs the hub
    convert(args.gguf_file, args.out_dir, args.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
