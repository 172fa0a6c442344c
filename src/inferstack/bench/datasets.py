"""Datasets of a run, turned into inference-perf's ``data`` section.

Kinds: ``synthetic`` (normal input/output length distributions), ``shared-prefix`` (groups x
prompts sharing a system prompt), ``documents`` (the folder of text documents shipped in the package,
``BUNDLED_DOCUMENTS``), a ShareGPT-style JSON file, or a folder of text documents.
A folder becomes a ShareGPT-style JSON file inside the run directory: each chunk of a document
yields a *copy* prompt (the answer repeats the prompt: where n-gram speculation shines) and a
*summarize* prompt (answer length a quarter of the chunk). Output lengths are counted in words /
0.75 (a token estimate: this package has no tokenizer); inference-perf re-counts them with the
real tokenizer and uses the answer's length as ``max_tokens``.

Invariant: every error (missing path, empty folder, malformed JSON) is a :class:`ConfigError`
raised before any load is sent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from inferstack.bench.settings import BenchSettings
from inferstack.errors import ConfigError

__all__ = ["BUNDLED_DOCUMENTS", "TEXT_SUFFIXES", "data_section", "documents_to_sharegpt", "validate_sharegpt"]

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
WORDS_PER_TOKEN = 0.75
# Copy/summarize prompts over the project's own docs: where n-gram speculation helps (``documents``).
BUNDLED_DOCUMENTS = Path(__file__).with_name("data") / "documents"


def data_section(settings: BenchSettings, run_dir: Path) -> dict[str, Any]:
    """inference-perf's ``data`` mapping for the settings' dataset (may write into ``run_dir``)."""
    kind = settings.dataset
    if kind == "synthetic":
        s = settings.synthetic
        return {
            "type": "synthetic",
            "input_distribution": _normal(s.input_min, s.input_max, s.input_mean, s.input_std),
            "output_distribution": _normal(s.output_min, s.output_max, s.output_mean, s.output_std),
        }
    if kind == "shared-prefix":
        p = settings.shared_prefix
        return {
            "type": "shared_prefix",
            "shared_prefix": {
                "num_groups": p.groups,
                "num_prompts_per_group": p.prompts_per_group,
                "system_prompt_len": p.prefix_len,
                "question_len": p.question_len,
                "output_len": p.output_len,
                "seed": p.seed,
            },
        }
    path = BUNDLED_DOCUMENTS if kind == "documents" else Path(kind).expanduser()
    if not path.exists():
        raise ConfigError(
            f"dataset '{kind}' is neither 'synthetic', 'shared-prefix', 'documents' nor an existing path "
            "(a ShareGPT-style .json file or a folder of text documents)"
        )
    if path.is_dir():
        out = run_dir / "dataset" / "documents.sharegpt.json"
        count = documents_to_sharegpt(path, out, settings.max_output_tokens)
        logger.info("dataset: %d prompts from the documents in %s -> %s", count, path, out)
        return {"type": "shareGPT", "path": str(out.resolve())}
    count = validate_sharegpt(path)
    logger.info("dataset: %d ShareGPT conversations in %s", count, path)
    return {"type": "shareGPT", "path": str(path.resolve())}


def _normal(lo: int, hi: int, mean: int, std: int) -> dict[str, Any]:
    return {"type": "normal", "min": lo, "max": hi, "mean": mean, "std_dev": std}


def validate_sharegpt(path: Path) -> int:
    """Number of usable conversations (>= 2 turns with text) in a ShareGPT-style JSON file."""
    if path.suffix != ".json":
        raise ConfigError(f"dataset file '{path}' must be a ShareGPT-style .json file")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"dataset file '{path}' is not readable JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise ConfigError(f"dataset file '{path}' must hold a JSON list of conversations")
    usable = 0
    for row in rows:
        turns = row.get("conversations") if isinstance(row, dict) else None
        if (
            isinstance(turns, list)
            and len(turns) >= 2
            and all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns[:2])
            and turns[0]["value"].strip()
        ):
            usable += 1
    if usable == 0:
        raise ConfigError(
            f"dataset file '{path}' has no usable conversation; each needs "
            '{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}'
        )
    return usable


def _chunks(text: str, words_per_chunk: int) -> list[str]:
    words = text.split()
    return [" ".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]


def documents_to_sharegpt(folder: Path, out: Path, max_output_tokens: int) -> int:
    """Write copy/summarize prompts for every text document in ``folder``; returns their count."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    chunk_words = max(8, int(max_output_tokens * WORDS_PER_TOKEN))
    rows: list[dict[str, Any]] = []
    for doc in files:
        try:
            text = doc.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"dataset document '{doc}' is not readable UTF-8 text: {exc}") from exc
        for chunk in _chunks(text, chunk_words):
            if len(chunk.split()) < 4:
                continue
            summary_words = chunk.split()[: max(4, len(chunk.split()) // 4)]
            rows.append(_conversation(f"Copy the following text exactly.\n\n{chunk}\n\nCopy:", chunk))
            rows.append(
                _conversation(f"Summarize the following text.\n\n{chunk}\n\nSummary:", " ".join(summary_words))
            )
    if not rows:
        raise ConfigError(
            f"dataset folder '{folder}' has no text documents with content "
            f"(looked for files ending in {', '.join(TEXT_SUFFIXES)})"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return len(rows)


def _conversation(prompt: str, answer: str) -> dict[str, Any]:
    return {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]}
