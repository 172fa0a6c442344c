from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferstack.bench.datasets import data_section, documents_to_sharegpt, validate_sharegpt
from inferstack.bench.settings import BenchSettings
from inferstack.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "bench"


def _settings(dataset: str) -> BenchSettings:
    return BenchSettings(profile="constant", rate=1, dataset=dataset, target="http://127.0.0.1:1")


def test_documents_become_copy_and_summarize_prompts(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    n = documents_to_sharegpt(EXAMPLES / "documents", out, max_output_tokens=128)
    rows = json.loads(out.read_text())
    assert n == len(rows) and n % 2 == 0 and n >= 6
    copy, summary = rows[0]["conversations"], rows[1]["conversations"]
    assert copy[0]["value"].startswith("Copy the following text exactly.")
    # The copy answer is the chunk itself, and the chunk is inside the prompt: n-gram friendly.
    assert copy[1]["value"] in copy[0]["value"]
    assert len(summary[1]["value"].split()) < len(copy[1]["value"].split())
    assert validate_sharegpt(out) == n


def test_long_documents_are_chunked_to_the_output_cap(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.md").write_text(" ".join(f"w{i}" for i in range(1000)))
    n = documents_to_sharegpt(docs, tmp_path / "o.json", max_output_tokens=100)
    rows = json.loads((tmp_path / "o.json").read_text())
    assert n == 2 * 14  # ceil(1000 / 75) chunks, two prompts each
    assert max(len(r["conversations"][1]["value"].split()) for r in rows) == 75


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(ConfigError, match="has no text documents"):
        data_section(_settings(str(tmp_path / "empty")), tmp_path / "run")


def test_missing_path_and_bad_json_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither 'synthetic', 'shared-prefix', 'documents' nor an existing path"):
        data_section(_settings(str(tmp_path / "nope")), tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        validate_sharegpt(bad)
    bad.write_text(json.dumps([{"conversations": [{"from": "human", "value": "hi"}]}]))
    with pytest.raises(ConfigError, match="no usable conversation"):
        validate_sharegpt(bad)


def test_sections_for_named_datasets(tmp_path: Path) -> None:
    syn = data_section(_settings("synthetic"), tmp_path)
    assert syn["type"] == "synthetic" and syn["input_distribution"]["mean"] == 128
    sp = data_section(_settings("shared-prefix"), tmp_path)
    assert sp["type"] == "shared_prefix" and sp["shared_prefix"]["system_prompt_len"] == 256
    folder = data_section(_settings(str(EXAMPLES / "documents")), tmp_path)
    assert folder["type"] == "shareGPT" and Path(folder["path"]).is_file()
    shipped = data_section(_settings("documents"), tmp_path / "shipped")  # inside the package, no repo needed
    assert shipped["type"] == "shareGPT" and len(json.loads(Path(shipped["path"]).read_text())) >= 6
