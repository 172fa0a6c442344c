"""``inferstack recommend`` and ``inferstack render`` through the real entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferstack.cli import main
from inferstack.errors import ConfigError
from inferstack.kube import load_settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_recommend_prints_the_arithmetic_and_the_tensor_parallel_size(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "recommend", "--model", "llama-3.3-70b-instruct", "--accelerator", "h100")
    assert code == 0
    lines = out.splitlines()
    assert "tensor-parallel-size: 4" in lines and "max-model-len: 131072" in lines
    assert any("131.5 GiB weights" in line for line in lines)


def test_recommend_with_gpus(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "recommend", "--model", "qwen3-32b", "--accelerator", "h100", "--gpus", "2")
    assert code == 0 and "tensor-parallel-size: 2" in out.splitlines()


def test_recommend_does_not_fit_exits_non_zero(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "recommend", "--model", "llama-3.3-70b-instruct", "--accelerator", "l4",
                         "--gpus", "1")
    assert code != 0 and out == ""
    assert "does not fit on l4" in err and "the weights do not fit" in err


def test_render_check_writes_a_valid_directory(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "render", "--model", "gemma-3-27b-it", "--accelerator", "h200", "--spec", "ngram",
                       "--no-gateway", "--no-autoscale", "--output", str(tmp_path), "--check")
    assert code == 0, out
    assert "tensor-parallel-size: 1" in out.splitlines() and "OK" in out
    assert (tmp_path / "kustomization.yaml").exists() and not (tmp_path / "gateway.yaml").exists()
    assert not (tmp_path / "autoscaling.yaml").exists()


def test_render_single_file_and_nodes(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "render", "--model", "llama-3.3-70b-instruct", "--accelerator", "h100",
                       "--nodes", "2", "--single-file", "--output", str(tmp_path))
    assert code == 0
    text = (tmp_path / "manifests.yaml").read_text()
    assert "kind: LeaderWorkerSet" in text and "pipeline-parallel-size: 2" in out


def test_render_check_fails_with_object_field_and_reason(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "bad.yaml"
    config.write_text("model: qwen3-32b\naccelerator: h100\ngateway:\n  gateway_class: ''\n")
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "render", "--config", str(config), "--output", str(out_dir), "--check")
    assert code == 1
    assert "invalid: Gateway/inferstack/inferstack-gateway: spec.gatewayClassName: '' should be non-empty" in err
    assert "nothing written" in err and not out_dir.exists()


def test_render_refuses_an_eagle_method_without_a_known_head(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "render", "--model", "gemma-3-27b-it", "--accelerator", "h100", "--spec", "eagle3",
                       "--output", str(tmp_path))
    assert code == 2 and "no published eagle3 head is known for gemma-3-27b-it" in err


def test_render_needs_a_model(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "render", "--accelerator", "h100", "--output", str(tmp_path))
    assert code == 2 and "'model' Field required" in err


def test_settings_file_unknown_keys_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("model: qwen3-32b\naccelerator: h100\nautoscale:\n  max_replica: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'autoscale.max_replica'"):
        load_settings(config, {})


def test_cli_flags_override_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: qwen3-32b\naccelerator: h100\ngateway:\n  enabled: true\n")
    settings = load_settings(config, {"accelerator": "h200", "gateway.enabled": False})
    assert settings.accelerator == "h200" and settings.gateway.enabled is False
