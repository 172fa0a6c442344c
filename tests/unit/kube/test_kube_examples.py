"""Every example render config in examples/kube loads, renders and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferstack.kube import load_settings, render, validate_objects

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples" / "kube").glob("*.yaml"))


def test_examples_exist() -> None:
    assert EXAMPLES, "examples/kube/*.yaml should exist"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_renders_and_validates(path: Path) -> None:
    result = render(load_settings(path, {}))
    assert validate_objects(result.objects()) == []
