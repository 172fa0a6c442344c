"""Shared fixtures of the bench unit tests: the recorded real runs (see tests/fixtures/bench)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "bench"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "bench"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def run_ngram(tmp_path: Path) -> Path:
    """A copy of the recorded ngram run (tests may modify it)."""
    return Path(shutil.copytree(FIXTURES / "run-ngram", tmp_path / "run-ngram"))


@pytest.fixture
def run_none(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / "run-none", tmp_path / "run-none"))
