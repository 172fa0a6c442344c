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
                       "--bucket", "my-models", "--no-gateway", "--no-autoscale", "--output", str(tmp_path), "--check")
    assert code == 0, out
    assert "tensor-parallel-size: 1" in out.splitlines() and "OK" in out
    assert (tmp_path / "kustomization.yaml").exists() and not (tmp_path / "gateway.yaml").exists()
    assert not (tmp_path / "autoscaling.yaml").exists()


def test_render_single_file_and_nodes(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "render", "--model", "llama-3.3-70b-instruct", "--accelerator", "h100",
                       "--bucket", "my-models", "--nodes", "2", "--single-file", "--output", str(tmp_path))
    assert code == 0
    text = (tmp_path / "manifests.yaml").read_text()
    assert "kind: LeaderWorkerSet" in text and "pipeline-parallel-size: 2" in out


def test_render_check_fails_with_object_field_and_reason(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "bad.yaml"
    config.write_text("model: qwen3-32b\naccelerator: h100\nmodel_bucket: my-models\ngateway:\n  gateway_class: ''\n")
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "render", "--config", str(config), "--output", str(out_dir), "--check")
    assert code == 1
    assert "invalid: Gateway/inferstack/inferstack-gateway: spec.gatewayClassName: '' should be non-empty" in err
    assert "nothing written" in err and not out_dir.exists()


def test_render_refuses_an_eagle_method_without_a_known_head(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "render", "--model", "gemma-3-27b-it", "--accelerator", "h100", "--spec", "eagle3",
                       "--bucket", "my-models", "--output", str(tmp_path))
    assert code == 2 and "no published eagle3 head is known for gemma-3-27b-it" in err


def test_render_needs_a_model(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "render", "--accelerator", "h100", "--output", str(tmp_path))
    assert code == 2 and "'model' Field required" in err


def test_settings_file_unknown_keys_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text("model: qwen3-32b\naccelerator: h100\nautoscale:\n  max_replica: 3\n")
    # 'autoscale' is the old name of 'autoscaling': it loads, and errors use the new name.
    with pytest.raises(ConfigError, match="unknown key 'autoscaling.max_replica'"):
        load_settings(config, {})


def test_cli_flags_override_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: qwen3-32b\naccelerator: h100\ngateway:\n  enabled: true\n")
    settings = load_settings(config, {"accelerator": "h200", "gateway.enabled": False})
    assert settings.accelerator == "h200" and settings.gateway.enabled is False


def test_render_contract_bucket_project_namespace_and_upstream_epp(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "render", "--model", "llama-3.3-70b-instruct", "--accelerator", "h100",
                         "--spec", "eagle3", "--bucket", "acme-llm-weights", "--project", "acme-prod",
                         "--namespace", "llm", "--epp", "upstream", "--output", str(tmp_path), "--check")
    assert code == 0, err
    text = "".join(p.read_text() for p in sorted(tmp_path.rglob("*.yaml")))
    assert "inferstack-models" not in text and "bucketName: acme-llm-weights" in text
    assert "namespace: llm" in text and "namespace: inferstack\n" not in text
    images = [line.split("image:", 1)[1].strip() for line in text.splitlines() if "image:" in line]
    assert images and not [i for i in images if "inferstack" in i]
    assert "acme-prod" in (tmp_path / "README.md").read_text()


def test_render_without_a_bucket_says_what_to_pass(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "render", "--model", "qwen3-32b", "--accelerator", "h100", "--output", str(tmp_path))
    assert code == 2 and out == ""
    assert "pass --bucket NAME (or set 'model_bucket' in the render config)" in err
    assert not tmp_path.joinpath("serving.yaml").exists()


def test_render_rejects_a_bucket_url_with_the_rule(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "render", "--model", "qwen3-32b", "--accelerator", "h100", "--bucket", "gs://x",
                       "--output", str(tmp_path))
    assert code == 2 and "'model_bucket' has value 'gs://x'" in err and "not gs://NAME" in err


def test_render_our_epp_needs_an_image(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "render", "--model", "qwen3-32b", "--accelerator", "h100", "--bucket", "b-models",
                       "--epp", "inferstack", "--output", str(tmp_path))
    assert code == 2 and "--epp-image" in err
    code, out, err = run(capsys, "render", "--model", "qwen3-32b", "--accelerator", "h100", "--bucket", "b-models",
                         "--epp", "inferstack", "--epp-image", "europe-docker.pkg.dev/p/r/inferstack:0.1.0",
                         "--output", str(tmp_path), "--check")
    assert code == 0, err
    assert "image: europe-docker.pkg.dev/p/r/inferstack:0.1.0" in (tmp_path / "gateway.yaml").read_text()


def test_render_flags_for_gateway_class_token_cold_start_and_classes(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "render", "--model", "qwen3-32b", "--accelerator", "h100", "--bucket", "b-models",
                       "--gateway-class", "global-external", "--external-without-keys",
                       "--hf-token-source", "secret-manager",
                       "--load-format", "runai_streamer", "--reference-compute-classes", "--dataset", "synthetic",
                       "--output", str(tmp_path), "--check")
    assert code == 2 and "pass --project PROJECT_ID" in err
    code, _, err = run(capsys, "render", "--model", "qwen3-32b", "--accelerator", "h100", "--bucket", "b-models",
                       "--project", "acme-prod", "--gateway-class", "global-external", "--external-without-keys",
                       "--hf-token-source", "secret-manager", "--load-format", "runai_streamer",
                       "--reference-compute-classes", "--dataset", "synthetic", "--output", str(tmp_path), "--check")
    assert code == 0, err
    gateway = (tmp_path / "gateway.yaml").read_text()
    assert "gatewayClassName: gke-l7-global-external-managed" in gateway
    assert "kind: SecretProviderClass" in (tmp_path / "model-download.yaml").read_text()
    serving = (tmp_path / "serving.yaml").read_text()
    assert "--load-format=runai_streamer" in serving and "--model=gs://b-models/qwen/qwen3-32b" in serving
    assert "cloud.google.com/compute-class: gpu-h100-80gb-high-x1" in serving
    assert not (tmp_path / "compute-class.yaml").exists()


def test_settings_file_equivalents_of_the_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: qwen3-32b\naccelerator: h100\nmodel_bucket: b-models\nproject: acme-prod\n"
                      "namespace: llm\ngateway:\n  epp: inferstack\nimages:\n  epp: r/e:1\n"
                      "cold_start:\n  mode: prefetch\nbench:\n  dataset: shareGPT\n")
    settings = load_settings(config, {"namespace": "llm2"})
    assert (settings.model_bucket, settings.project, settings.namespace) == ("b-models", "acme-prod", "llm2")
    assert settings.gateway.epp == "inferstack" and settings.images.epp == "r/e:1"
    assert settings.cold_start.mode == "prefetch" and settings.bench.dataset == "shareGPT"
    config.write_text("model: qwen3-32b\naccelerator: h100\nbucket: b-models\n")
    with pytest.raises(ConfigError, match="unknown key 'bucket'"):
        load_settings(config, {})


def test_render_takes_the_speculative_config_tune_spec_recommended(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recommended = tmp_path / "recommended.yaml"
    recommended.write_text("# inferstack tune-spec: ngram-k12 ...\nreplicas: 2\nspeculative:\n  method: ngram\n"
                           "  num_speculative_tokens: 12\n  prompt_lookup_min: 3\n  prompt_lookup_max: 8\n")
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "render", "--model", "qwen3-32b", "--accelerator", "h100", "--bucket", "acme",
                       "--spec-from", str(recommended), "--output", str(out_dir), "--check")
    assert code == 0, err
    text = "".join(p.read_text() for p in sorted(out_dir.rglob("*.yaml")))
    assert '{"method":"ngram","num_speculative_tokens":12,"prompt_lookup_min":3,"prompt_lookup_max":8}' in text
    assert "cnn_dailymail" in text  # the benchmark Job's prompts suit n-gram speculation


@pytest.mark.parametrize(("content", "message"), [
    ("replicas: 2\n", "has no speculative: section"),
    ("speculative: {method: draft, model: /m}\n", "method 'draft' cannot be rendered"),
    ("speculative: {method: suffix}\n", "suffix decoding needs arctic-inference"),
    ("speculative: {method: ngram, num_speculative_tokens: 0}\n", "'num_speculative_tokens' has value 0"),
])
def test_render_spec_from_a_file_it_cannot_use_says_why(capsys, tmp_path: Path, content: str, message: str) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "stack.yaml"
    source.write_text(content)
    code, _, err = run(capsys, "render", "--model", "qwen3-32b", "--accelerator", "h100", "--bucket", "acme",
                       "--spec-from", str(source), "--output", str(tmp_path / "out"))
    assert code == 2 and message in err, err


def test_render_refuses_an_external_gateway_without_keys_and_takes_them_from_a_secret(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = ("render", "--model", "gemma-3-1b-it", "--accelerator", "l4", "--bucket", "my-models",
            "--gateway-class", "regional-external")
    code, _, err = run(capsys, *base, "--output", str(tmp_path / "open"))
    assert code == 2 and "internet-facing" in err and "--auth-secret" in err and not (tmp_path / "open").exists()
    code, out, err = run(capsys, *base, "--epp", "inferstack", "--epp-image", "example.com/inferstack:1",
                         "--auth-secret", "api-keys", "--output", str(tmp_path / "keyed"))
    assert code == 0, err
    assert "secretName: api-keys" in (tmp_path / "keyed" / "gateway.yaml").read_text()
    code, _, err = run(capsys, *base, "--external-without-keys", "--output", str(tmp_path / "guarded"))
    assert code == 0, err
    assert "Cloud Armor" in (tmp_path / "guarded" / "README.md").read_text()
