"""Output that applies as rendered: the user's bucket, project and namespace everywhere, no object
that clashes with the reference architecture's, weights the reference's Jobs left accepted,
cold-start options, and the benchmark's datasets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferstack.errors import ConfigError
from inferstack.kube import RenderSettings, render, validate_objects
from inferstack.kube.jobs import _COMPLETE_PY
from inferstack.kube.serving import folder_complete_check
from inferstack.kube.stack import DONE_MARKER
from inferstack.models.catalog import ACCELERATORS, MODELS

USER = {"model_bucket": "acme-llm-weights", "project": "acme-prod", "namespace": "llm-serving"}
SPECS = ("none", "ngram", "eagle", "eagle3")


def objects_of(**kw: Any) -> list[dict[str, Any]]:
    return render(RenderSettings(**{**USER, **kw})).objects()


def images(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k == "image"] + [i for v in obj.values() for i in images(v)]
    if isinstance(obj, list):
        return [i for v in obj for i in images(v)]
    return []


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def vllm(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] in ("Deployment", "LeaderWorkerSet")
                and o["metadata"]["labels"]["app.kubernetes.io/name"] == "vllm")


def rendered_pairs() -> list[tuple[str, str, str]]:
    pairs = []
    for model in MODELS:
        for acc in ACCELERATORS:
            for spec in SPECS:
                try:
                    render(RenderSettings(model=model.name, accelerator=acc.short_name, spec=spec, **USER))
                except ConfigError as exc:
                    assert "does not fit" in str(exc) or "no published" in str(exc), exc
                    continue
                pairs.append((model.name, acc.short_name, spec))
    return pairs


def test_every_pair_uses_the_users_names_and_the_upstream_picker() -> None:
    """Every (model, accelerator, method) that renders: no object names the old hard-coded
    bucket or namespace, every GCS reference is the user's bucket, no image names inferstack,
    and nothing is left for a hand edit (no placeholder)."""
    pairs = rendered_pairs()
    assert len(pairs) == 108
    for model, acc, spec in pairs:
        objs = objects_of(model=model, accelerator=acc, spec=spec)
        assert validate_objects(objs) == [], (model, acc, spec)
        text = yaml.safe_dump_all(objs)
        assert "inferstack-models" not in text, (model, acc, spec)
        assert "PROJECT_ID" not in text and "replaced-by" not in text and "BUCKET_NAME" not in text
        buckets = {o for line in text.splitlines() if "bucketName:" in line for o in [line.split(":", 1)[1].strip()]}
        assert buckets == {"acme-llm-weights"}, (model, acc, spec, buckets)
        namespaces = {o["metadata"].get("namespace") for o in objs} - {None}
        assert namespaces == {"llm-serving"}, (model, acc, spec)
        named = images(objs)
        assert named and not [i for i in named if "inferstack" in i], (model, acc, spec, named)


def test_the_reference_comparison_stacks_need_no_hand_edit(tmp_path: Path) -> None:
    """The three stacks the issue compares with the reference: the user's bucket is in every
    object that touches GCS (vLLM, download Jobs, benchmark ConfigMap and Job)."""
    for model, acc, spec in (("llama-3.3-70b-instruct", "h100", "eagle3"), ("gemma-3-27b-it", "h100", "ngram"),
                             ("qwen3-32b", "l4", "none")):
        objs = objects_of(model=model, accelerator=acc, spec=spec)
        touching = [f"{o['kind']}/{o['metadata']['name']}" for o in objs if "acme-llm-weights" in json.dumps(o)]
        kinds = sorted({t.split("/")[0] for t in touching})
        assert kinds == ["ConfigMap", "Deployment", "Job"], touching
        assert len([t for t in touching if t.startswith("Job/")]) == (3 if spec == "eagle3" else 2)


# ---- interop with the reference architecture -------------------------------------------------

def test_compute_classes_are_ours_unless_the_reference_names_are_asked_for() -> None:
    from inferstack.models.catalog import ACCELERATORS as ACCS

    reference_names = {s.compute_class for a in ACCS for s in a.shapes} | {"model-download"}
    objs = objects_of(model="llama-3.3-70b-instruct", accelerator="h100")
    classes = [o["metadata"]["name"] for o in objs if o["kind"] == "ComputeClass"]
    assert classes == ["inferstack-gpu-h100-80gb-high-x4", "inferstack-model-download"]
    assert not set(classes) & reference_names
    job = next(o for o in objs if o["kind"] == "Job" and o["metadata"]["name"].endswith("-dl-model"))
    assert pod_spec(job)["nodeSelector"] == {"cloud.google.com/compute-class": "inferstack-model-download",
                                             "iam.gke.io/gke-metadata-server-enabled": "true"}
    theirs = objects_of(model="llama-3.3-70b-instruct", accelerator="h100", compute_class_names="reference")
    assert not [o for o in theirs if o["kind"] == "ComputeClass"]
    assert pod_spec(vllm(theirs))["nodeSelector"] == {"cloud.google.com/compute-class": "gpu-h100-80gb-high-x4"}
    job = next(o for o in theirs if o["kind"] == "Job" and o["metadata"]["name"].endswith("-dl-model"))
    assert pod_spec(job)["nodeSelector"]["cloud.google.com/compute-class"] == "model-download"


def _complete(tmp_path: Path, files: dict[str, str]) -> bool:
    folder = tmp_path / "m"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    script = folder_complete_check([str(folder)]).split("until ")[0] + f"complete {folder}\n"
    return subprocess.run(["/bin/sh", "-c", script], timeout=10).returncode == 0


def test_the_pods_accept_a_complete_folder_without_our_marker(tmp_path: Path) -> None:
    index = json.dumps({"metadata": {"total_size": 3}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors"}}, indent=2)
    shards = {"model-00001-of-00002.safetensors": "x", "model-00002-of-00002.safetensors": "x"}
    assert _complete(tmp_path, {DONE_MARKER: "t"})
    assert _complete(tmp_path, {"config.json": "{}", "model.safetensors.index.json": index, **shards})
    assert not _complete(tmp_path, {"config.json": "{}", "model.safetensors.index.json": index,
                                    "model-00001-of-00002.safetensors": "x"})
    assert not _complete(tmp_path, {"model.safetensors.index.json": index, **shards})
    assert _complete(tmp_path, {"config.json": "{}", "model.safetensors": "x"})
    assert _complete(tmp_path, {"config.json": "{}", "pytorch_model.bin": "x"})  # EAGLE heads
    assert not _complete(tmp_path, {"config.json": "{}"})


def _fake_gcloud(tmp_path: Path, bucket_dir: Path) -> dict[str, str]:
    """A gcloud that answers `storage ls gs://b/p/*` and `storage cat gs://b/p/f` from a folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "gcloud"
    script.write_text(
        "#!/bin/sh\n"
        f'root="{bucket_dir}"\n'
        'path="${3#gs://}"\n'
        'if [ "$2" = ls ]; then\n'
        '  dir="$root/${path%/\\*}"; [ -d "$dir" ] || exit 1\n'
        # gcloud's '*' matches names that start with '.' too, unlike a shell glob.
        '  for f in "$dir"/* "$dir"/.[!.]*; do [ -e "$f" ] && echo "gs://$path" | sed "s|\\*$|$(basename "$f")|"; done\n'
        '  exit 0\n'
        "fi\n"
        'cat "$root/$path"\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_the_download_job_skips_a_folder_the_reference_filled(tmp_path: Path) -> None:
    code = _COMPLETE_PY.strip() % {"marker": DONE_MARKER}
    folder = tmp_path / "gcs" / "b" / "meta-llama" / "llama"  # gs://b/meta-llama/llama
    folder.mkdir(parents=True)
    env = _fake_gcloud(tmp_path, tmp_path / "gcs")

    def complete() -> bool:
        return subprocess.run(["python3", "-c", code, "gs://b/meta-llama/llama"], env=env,
                              timeout=20).returncode == 0

    assert not complete()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "m-1.safetensors",
                                                                                    "b": "m-2.safetensors"}}))
    (folder / "m-1.safetensors").write_text("x")
    assert not complete()
    (folder / "m-2.safetensors").write_text("x")
    assert complete()
    (folder / "config.json").unlink()
    (folder / DONE_MARKER).write_text("t")  # our marker alone is enough
    assert complete()


# ---- cold start ----------------------------------------------------------------------------------

def test_prefetch_is_a_native_sidecar_after_the_wait() -> None:
    spec = pod_spec(vllm(objects_of(model="llama-3.3-70b-instruct", accelerator="h100", spec="eagle3")))
    wait, prefetch = spec["initContainers"]
    assert wait["name"] == "wait-for-model" and "restartPolicy" not in wait
    assert prefetch["name"] == "prefetch-weights" and prefetch["restartPolicy"] == "Always"
    script = prefetch["command"][2]
    assert "/gcs/meta-llama/llama-3.3-70b-instruct /gcs/yuhuili/eagle3-llama3.3-instruct-70b" in script
    assert "xargs -r -P 16" in script and "of=/dev/null" in script
    assert {m["name"] for m in prefetch["volumeMounts"]} == {"model", "draft"}
    assert all(m["readOnly"] for m in prefetch["volumeMounts"])


def test_prefetch_script_reads_every_weight_file(tmp_path: Path) -> None:
    spec = pod_spec(vllm(objects_of(model="qwen3-32b", accelerator="h100")))
    script = spec["initContainers"][1]["command"][2].replace("/gcs/qwen/qwen3-32b", str(tmp_path))
    script = script.replace("exec sleep 2147483647", "true")
    for name in ("a.safetensors", "b.safetensors", "config.json"):
        (tmp_path / name).write_bytes(b"\0" * 4096)
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("records in") == 2  # dd ran once per weight file, not on config.json


def test_multi_node_defaults_to_fuse_and_refuses_prefetch() -> None:
    spec = vllm(objects_of(model="llama-3.3-70b-instruct", accelerator="h100", nodes=2))
    leader = spec["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    assert [c["name"] for c in leader["initContainers"]] == ["wait-for-model"]
    with pytest.raises(ConfigError, match="cold_start.mode has value 'prefetch' with nodes 2"):
        objects_of(model="llama-3.3-70b-instruct", accelerator="h100", nodes=2, cold_start={"mode": "prefetch"})


def test_runai_streamer_streams_from_the_users_bucket() -> None:
    objs = objects_of(model="qwen3-32b", accelerator="h100", cold_start={"mode": "runai-streamer"})
    spec = pod_spec(vllm(objs))
    args = spec["containers"][0]["args"]
    assert "--model=gs://acme-llm-weights/qwen/qwen3-32b" in args and "--load-format=runai_streamer" in args
    extra = json.loads(next(a for a in args if a.startswith("--model-loader-extra-config=")).split("=", 1)[1])
    assert extra == {"concurrency": 16, "memory_limit": 8 * 2**30}
    assert [c["name"] for c in spec["initContainers"]] == ["wait-for-model"]
    assert "gke-gcsfuse-cache" not in {v["name"] for v in spec["volumes"]}
    assert validate_objects(objs) == []
    with pytest.raises(ConfigError, match="'runai-streamer' on v6e"):
        objects_of(model="qwen3-32b", accelerator="v6e", cold_start={"mode": "runai-streamer"})


# ---- Hugging Face token ----------------------------------------------------------------------------

def test_token_from_secret_manager_through_a_secret_provider_class() -> None:
    objs = objects_of(model="llama-3.3-70b-instruct", accelerator="h100", spec="eagle3",
                      hf_token_source="secret-manager", hf_token_secret_manager_secret="hf-read")
    assert validate_objects(objs) == []
    spc = next(o for o in objs if o["kind"] == "SecretProviderClass")
    assert spc["metadata"] == {**spc["metadata"], "name": "hf-token", "namespace": "llm-serving"}
    assert spc["spec"]["provider"] == "gke"
    assert yaml.safe_load(spc["spec"]["parameters"]["secrets"]) == [
        {"resourceName": "projects/acme-prod/secrets/hf-read/versions/latest", "path": "token"}]
    jobs = {o["metadata"]["name"]: pod_spec(o) for o in objs if o["kind"] == "Job" and "-dl-" in o["metadata"]["name"]}
    gated = next(s for n, s in jobs.items() if n.endswith("-dl-model"))
    token = next(v for v in gated["volumes"] if v["name"] == "hf-token")
    assert token["csi"] == {"driver": "secrets-store-gke.csi.k8s.io", "readOnly": True,
                            "volumeAttributes": {"secretProviderClass": "hf-token"}}
    public_head = next(s for n, s in jobs.items() if n.endswith("-dl-draft"))
    assert "hf-token" not in {v["name"] for v in public_head["volumes"]}
    assert "HF_TOKEN_PATH" not in {e["name"] for e in public_head["containers"][0]["env"]}
    with pytest.raises(ConfigError, match="pass --project PROJECT_ID"):
        render(RenderSettings(model="qwen3-32b", accelerator="h100", model_bucket="b-models",
                              hf_token_source="secret-manager"))


# ---- benchmark -------------------------------------------------------------------------------------

def bench_config(**kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    rendered = render(RenderSettings(**{**USER, **kw}))
    cm, job = rendered.benchmark
    return yaml.safe_load(cm["data"]["config.yaml"]), job


@pytest.mark.parametrize(("model", "spec", "dataset"), [
    ("gemma-3-27b-it", "ngram", "cnn_dailymail"),
    ("llama-3.3-70b-instruct", "eagle3", "shareGPT"),
    ("llama-4-scout-17b-16e-instruct", "eagle", "shareGPT"),
    ("qwen3-32b", "none", "synthetic"),
])
def test_benchmark_dataset_per_method_like_the_reference(model: str, spec: str, dataset: str) -> None:
    config, _ = bench_config(model=model, accelerator="h100", spec=spec)
    assert config["data"]["type"] == dataset
    assert config["api"] == {"type": "completion", "streaming": True}
    sweep = config["load"]["sweep"]
    assert (sweep["type"], sweep["num_stages"], sweep["stage_duration"], sweep["timeout"]) == ("linear", 7, 30, 250)
    assert (config["load"]["num_workers"], config["load"]["worker_max_concurrency"]) == (20, 15)
    assert config["storage"]["google_cloud_storage"]["bucket_name"] == "acme-llm-weights"


def test_benchmark_dataset_from_the_bucket() -> None:
    config, job = bench_config(model="gemma-3-27b-it", accelerator="h100", spec="ngram",
                               bench={"dataset_path": "datasets/cnn/cnn_dailymail.json"})
    assert config["data"] == {"type": "cnn_dailymail", "path": "/datasets/cnn_dailymail.json"}
    spec = pod_spec(job)
    volume = next(v for v in spec["volumes"] if v["name"] == "dataset")
    assert volume["csi"]["volumeAttributes"]["bucketName"] == "acme-llm-weights"
    assert "only-dir:datasets/cnn" in volume["csi"]["volumeAttributes"]["mountOptions"]
    with pytest.raises(ConfigError, match="bench.dataset_path has value 'sharegpt'"):
        bench_config(model="gemma-3-27b-it", accelerator="h100", spec="ngram", bench={"dataset_path": "sharegpt"})
    with pytest.raises(ConfigError, match="resolves to 'synthetic'"):
        bench_config(model="qwen3-32b", accelerator="h100", bench={"dataset_path": "datasets/x.json"})


def test_inference_perf_0_7_0_accepts_the_rendered_configs(tmp_path: Path) -> None:
    """The real inference-perf 0.7.0 config loader (its strict pydantic models), in the benchmark
    environment, reads every benchmark config we render: each dataset, with and without a path."""
    from inferstack.bench.interpreter import bench_python

    variants = {
        "synthetic": {"model": "qwen3-32b", "spec": "none"},
        "cnn": {"model": "gemma-3-27b-it", "spec": "ngram"},
        "sharegpt": {"model": "llama-3.3-70b-instruct", "spec": "eagle3"},
        "sharegpt-file": {"model": "llama-3.3-70b-instruct", "spec": "eagle3",
                          "bench": {"dataset_path": "datasets/sharegpt/ShareGPT_V3_unfiltered_cleaned_split.json"}},
    }
    paths = []
    for name, kw in variants.items():
        config, _ = bench_config(accelerator="h100", **kw)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        paths.append(str(path))
    check = (
        "import sys, json\n"
        "from inference_perf.config import read_config\n"
        "out = []\n"
        "for p in sys.argv[1:]:\n"
        "    c = read_config(p)\n"
        "    out.append([c.data.type.value, c.data.path, c.load.sweep.num_stages, c.load.sweep.stage_duration])\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(bench_python()), "-c", check, *paths], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        ["synthetic", None, 7, 30], ["cnn_dailymail", None, 7, 30], ["shareGPT", None, 7, 30],
        ["shareGPT", "/datasets/ShareGPT_V3_unfiltered_cleaned_split.json", 7, 30]]


# ---- our picker's image ----------------------------------------------------------------------------

def test_the_dockerfile_builds_what_the_rendered_deployment_runs() -> None:
    """The Dockerfile at the repository root installs the package like `make setup` (pip, no
    torch) and runs as the UID and with the command the rendered EPP Deployment expects."""
    root = Path(__file__).resolve().parents[3]
    dockerfile = (root / "Dockerfile").read_text()
    assert "pip install ." in dockerfile and "torch" not in dockerfile.replace("needs no torch", "")
    assert 'ENTRYPOINT ["inferstack"]' in dockerfile and "USER 65532:65532" in dockerfile
    objs = objects_of(model="qwen3-32b", accelerator="h100", gateway={"epp": "inferstack"},
                      images={"epp": "us-docker.pkg.dev/acme-prod/r/inferstack:0.1.0"})
    epp = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-epp"))
    spec = pod_spec(epp)
    container = spec["containers"][0]
    assert f"CMD {json.dumps(container['args'])}" in dockerfile  # same command as the Deployment's args
    assert spec["securityContext"]["runAsUser"] == 65532
    assert {"!pyproject.toml", "!README.md", "!src"} <= set((root / ".dockerignore").read_text().split())
