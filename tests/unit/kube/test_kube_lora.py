"""render --lora / the ``lora:`` section: vLLM's LoRA flags, the lora-syncer sidecar and its
ConfigMap, the adapters' folders and download Jobs, one InferenceObjective per adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferstack.cli import main
from inferstack.errors import ConfigError
from inferstack.gateway.settings import EppSettings
from inferstack.kube import RenderSettings, load_settings, render, validate_objects
from inferstack.kube.gateway import epp_config, upstream_epp_config
from inferstack.kube.upstream_epp import check_picker_config
from inferstack.lora.syncer_config import parse_syncer_config

BUCKET = "acme-llm-weights"
GEMMA = {"model": "gemma-3-1b-it", "accelerator": "l4"}
ADAPTERS = {"sql-lora": "Some-Org/SQL-LoRA", "support.v3": f"gs://{BUCKET}/adapters/support/v3",
            "sql-lora-b": "Some-Org/SQL-LoRA"}
LORA = {"enabled": True, "max_loras": 2, "max_lora_rank": 32, "max_cpu_loras": 4, "adapters": ADAPTERS}


def objects_of(**kw: Any) -> list[dict[str, Any]]:
    return render(RenderSettings(**{"model_bucket": BUCKET, **GEMMA, "lora": LORA, **kw})).objects()


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def vllm_pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "Deployment", "vllm-l4-gemma-3-1b-it")["spec"]["template"]["spec"]


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(i for i in items if i["name"] == name)


def test_the_vllm_container_gets_the_lora_flags_and_the_runtime_api() -> None:
    server = vllm_pod(objects_of())["containers"][0]
    args = server["args"]
    assert args[-4:] == ["--enable-lora", "--max-loras=2", "--max-lora-rank=32", "--max-cpu-loras=4"]
    assert not any(a.startswith("--lora-modules") for a in args)  # the syncer's ConfigMap is the one list
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "true"
    assert env["HF_HUB_OFFLINE"] == "1"  # adapters come from the bucket, never the Hub
    assert by_name(server["volumeMounts"], "adapters") == {"name": "adapters", "mountPath": "/adapters",
                                                           "readOnly": True}


def test_the_adapters_folder_of_the_bucket_is_mounted_read_only() -> None:
    lora = {**LORA, "adapters_folder": "/lora/prod/", "adapters": {"v3": f"gs://{BUCKET}/lora/prod/support/v3"}}
    objs = objects_of(lora=lora)
    volume = by_name(vllm_pod(objs)["volumes"], "adapters")
    assert volume["csi"]["readOnly"] is True
    assert volume["csi"]["volumeAttributes"]["bucketName"] == BUCKET
    assert volume["csi"]["volumeAttributes"]["mountOptions"].endswith(",only-dir:lora/prod")
    models = yaml.safe_load(_syncer_file(objs))["vLLMLoRAConfig"]["ensureExist"]["models"]
    assert models == [{"id": "v3", "source": "/adapters/support/v3"}]


def test_the_syncer_is_a_native_sidecar_reading_its_configmap_folder() -> None:
    objs = objects_of()
    pod = vllm_pod(objs)
    init = [c["name"] for c in pod["initContainers"]]
    assert init == ["wait-for-model", "prefetch-weights", "lora-syncer"]
    syncer = by_name(pod["initContainers"], "lora-syncer")
    assert syncer["restartPolicy"] == "Always"
    assert syncer["image"] == "registry.k8s.io/gateway-api-inference-extension/lora-syncer:v1.2.1"
    assert syncer["env"] == [{"name": "DYNAMIC_LORA_ROLLOUT_CONFIG", "value": "/config/configmap.yaml"}]
    (mount,) = syncer["volumeMounts"]
    assert mount["mountPath"] == "/config" and "subPath" not in mount  # a subPath never sees edits
    volume = by_name(pod["volumes"], mount["name"])
    cm = one(objs, "ConfigMap", volume["configMap"]["name"])
    assert set(cm["data"]) == {"configmap.yaml"}
    assert syncer["securityContext"]["allowPrivilegeEscalation"] is False
    # Its metrics (lora_syncer_adapter_status) are scraped with vLLM's.
    monitoring = one(objs, "PodMonitoring", "vllm-l4-gemma-3-1b-it")
    assert {"port": "syncer-metrics", "path": "/metrics", "interval": "15s"} in monitoring["spec"]["endpoints"]
    assert syncer["ports"][0]["name"] == "syncer-metrics"


def _syncer_file(objs: list[dict[str, Any]]) -> str:
    return one(objs, "ConfigMap", "vllm-l4-gemma-3-1b-it-adapters")["data"]["configmap.yaml"]


def test_the_configmap_parses_with_our_syncer_reader_and_lists_every_adapter(tmp_path: Path) -> None:
    text = _syncer_file(objects_of())
    data = yaml.safe_load(text)
    config = data["vLLMLoRAConfig"]
    assert config["defaultBaseModel"] == "gemma-3-1b-it" and config["port"] == 8000
    assert {m["id"]: m["source"] for m in config["ensureExist"]["models"]} == {
        "sql-lora": "/adapters/some-org/sql-lora",
        "support.v3": "/adapters/support/v3",
        "sql-lora-b": "/adapters/some-org/sql-lora",
    }
    # The pod's /adapters, laid out here: every source must be a folder with adapter_config.json.
    root = tmp_path / "adapters"
    for folder in ("some-org/sql-lora", "support/v3"):
        (root / folder).mkdir(parents=True)
        (root / folder / "adapter_config.json").write_text("{}")
    local = yaml.safe_load(text.replace("/adapters/", f"{root}/"))
    desired = parse_syncer_config(local, "configmap.yaml", base_model="gemma-3-1b-it")
    assert sorted(desired.ensure_exist) == sorted(ADAPTERS)
    assert desired.ensure_not_exist == frozenset()
    with pytest.raises(ConfigError, match="defaultBaseModel 'gemma-3-1b-it'; the replicas serve 'other'"):
        parse_syncer_config(local, "configmap.yaml", base_model="other")


def test_lora_alone_renders_an_empty_set_to_edit_later() -> None:
    objs = objects_of(lora={"enabled": True})
    text = _syncer_file(objs)
    assert "kubectl -n inferstack edit configmap vllm-l4-gemma-3-1b-it-adapters" in text
    assert yaml.safe_load(text)["vLLMLoRAConfig"]["ensureExist"] == {"models": []}
    assert parse_syncer_config(yaml.safe_load(text), "cm", base_model="gemma-3-1b-it").ensure_exist == {}
    assert [o for o in objs if o["kind"] == "InferenceObjective"] == [one(objs, "InferenceObjective", "gemma-3-1b-it")]
    assert validate_objects(objs) == []


def test_one_objective_per_adapter_with_the_pool_and_priority() -> None:
    objs = objects_of(gateway={"priority": 5})
    objectives = {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "InferenceObjective"}
    pool = {"name": "vllm-l4-gemma-3-1b-it"}
    assert objectives == {name: {"poolRef": pool, "priority": 5}
                          for name in ("gemma-3-1b-it", "sql-lora", "support.v3", "sql-lora-b")}
    objs = objects_of(lora={**LORA, "priority": -2})
    assert one(objs, "InferenceObjective", "sql-lora")["spec"]["priority"] == -2
    assert one(objs, "InferenceObjective", "gemma-3-1b-it")["spec"]["priority"] == 0


def test_both_pickers_know_the_adapters() -> None:
    stack = render(RenderSettings(model_bucket=BUCKET, **GEMMA, lora=LORA, gateway={"epp": "inferstack"},
                                  images={"epp": "registry.example/inferstack:1"})).stack
    ours = EppSettings.model_validate(epp_config(stack))
    assert [(o.model, o.priority) for o in ours.objectives] == [
        ("gemma-3-1b-it", 0), ("sql-lora", 0), ("support.v3", 0), ("sql-lora-b", 0)]
    assert [s.type for s in ours.scheduler.scorers][-1] == "lora"
    upstream = upstream_epp_config(render(RenderSettings(model_bucket=BUCKET, **GEMMA, lora=LORA)).stack)
    assert check_picker_config(upstream) == []
    assert {"pluginRef": "lora-affinity-scorer", "weight": 1} in upstream["schedulingProfiles"][0]["plugins"]


def test_hub_adapters_are_copied_into_the_bucket_by_one_job_each() -> None:
    objs = objects_of()
    jobs = [o for o in objs if o["kind"] == "Job" and "-dl-lora" in o["metadata"]["name"]]
    assert [j["metadata"]["name"] for j in jobs] == ["vllm-l4-gemma-3-1b-it-dl-lora1"]  # one hub id, twice
    env = {e["name"]: e.get("value") for e in jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REPO_ID"] == "Some-Org/SQL-LoRA" and env["BUCKET"] == BUCKET
    assert env["TARGET"] == "adapters/some-org/sql-lora"
    assert not [o for o in objects_of(lora={"enabled": True}) if "-dl-lora" in o["metadata"]["name"]]


@pytest.mark.parametrize("extra", [
    {},
    {"gateway": {"enabled": False}},
    {"batch": {"enabled": True}, "gateway": {"epp": "inferstack"}, "images": {"epp": "registry.example/i:1"}},
    {"model": "llama-3.3-70b-instruct", "accelerator": "h100", "spec": "eagle3", "nodes": 2},
    {"model": "qwen3-32b", "accelerator": "h100", "spec": "ngram", "cold_start": {"mode": "runai-streamer"},
     "autoscaling": {"autoscaler": "keda"}, "project": "acme-prod"},
], ids=["deployment", "no-gateway", "our-epp-batch", "lws-eagle3", "runai-keda"])
def test_lora_renders_validate_offline(extra: dict[str, Any]) -> None:
    objs = objects_of(**extra)
    assert validate_objects(objs) == []
    assert all(len(o["metadata"]["name"]) <= 63 for o in objs)
    for obj in objs:  # the security defaults hold for the syncer and the adapter Jobs too
        if obj["kind"] not in ("Deployment", "LeaderWorkerSet", "Job"):
            continue
        text = json.dumps(obj)
        assert '"privileged": true' not in text and '"allowPrivilegeEscalation": true' not in text
        assert text.count('"allowPrivilegeEscalation": false') >= text.count('"image":'), obj["metadata"]["name"]
        if "secretName" in text:  # the Hugging Face token: download Jobs only
            assert obj["kind"] == "Job" and "-dl-" in obj["metadata"]["name"]


def test_multi_node_syncer_on_the_leader_adapters_on_every_node() -> None:
    objs = objects_of(model="llama-3.3-70b-instruct", accelerator="h100", nodes=2)
    tmpl = one(objs, "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]
    leader, worker = tmpl["leaderTemplate"]["spec"], tmpl["workerTemplate"]["spec"]
    assert "lora-syncer" in [c["name"] for c in leader["initContainers"]]
    assert "lora-syncer" not in [c["name"] for c in worker["initContainers"]]
    assert "lora-syncer-config" not in [v["name"] for v in worker["volumes"]]
    assert "adapters" in [m["name"] for m in worker["containers"][0]["volumeMounts"]]
    assert "--enable-lora" in leader["containers"][0]["args"]


def test_without_lora_nothing_of_it_is_rendered() -> None:
    objs = render(RenderSettings(model_bucket=BUCKET, **GEMMA)).objects()
    text = json.dumps(objs)
    assert "lora" not in text.lower() and "/adapters" not in text


@pytest.mark.parametrize(("lora", "extra", "message"), [
    ({"adapters": {"a": "./my-adapter"}}, {},
     "'lora.adapters' .*adapter 'a' has source './my-adapter': a local folder cannot be read by pods"),
    ({"adapters": {"a": "s3://bucket/x"}}, {}, "adapter 'a' has source 's3://bucket/x': vLLM cannot load that scheme"),
    ({"adapters": {"a": "gs://Not_A_Bucket/x"}}, {}, "'Not_A_Bucket' is not a GCS bucket name"),
    ({"adapters": {"a": "gs://other-bucket/adapters/x"}}, {},
     r"'lora.adapters.a' has value 'gs://other-bucket/adapters/x'; the vLLM pods mount "
     r"gs://acme-llm-weights/adapters/"),
    ({"adapters": {"a": f"gs://{BUCKET}/elsewhere/x"}}, {}, "'lora.adapters.a' has value"),
    ({"adapters": {"SQL_Lora": "org/x"}}, {}, "adapter name 'SQL_Lora' cannot name its InferenceObjective"),
    ({"adapters": {"a,b": "org/x"}}, {}, "adapter name 'a,b' is not valid"),
    ({"adapters": {"gemma-3-1b-it": "org/x"}}, {}, "'lora.adapters.gemma-3-1b-it': the name 'gemma-3-1b-it' is the "
                                                   "base model's served name"),
    ({"adapters": {"vllm-l4-gemma-3-1b-it-batch": "org/x"}}, {"batch": {"enabled": True}},
     "is the batch service's InferenceObjective"),
    ({"adapters_folder": "../up"}, {}, "'lora.adapters_folder' has value '../up'"),
    ({"max_loras": 4, "max_cpu_loras": 2}, {}, r"max_cpu_loras \(2\) cannot be below max_loras \(4\)"),
    ({"adapters": {f"a{i}": "org/x" for i in range(3)}}, {}, "3 adapters listed but only 2 fit in memory"),
    ({"max_lora_rank": 24}, {}, "'lora.max_lora_rank' has value 24"),
    ({}, {"accelerator": "v6e", "model": "qwen3-32b"}, "lora.enabled on v6e: LoRA is rendered for the GPU image"),
])
def test_bad_lora_settings_are_refused_naming_the_key(lora: dict[str, Any], extra: dict[str, Any],
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render(load_settings(None, {"model_bucket": BUCKET, **GEMMA, "lora": {"enabled": True, **lora}, **extra}))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_render_lora_flags_check_and_write(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "render.yaml"
    config.write_text(yaml.safe_dump({"lora": {"enabled": True, "adapters": {"from-file": "org/file-lora"}}}))
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, "render", "--model", "gemma-3-1b-it", "--accelerator", "l4", "--bucket", BUCKET,
                         "--config", str(config), "--lora", "sql-lora=org/sql-lora",
                         "--lora", f"support=gs://{BUCKET}/adapters/support", "--max-loras", "3",
                         "--max-lora-rank", "8", "--output", str(out_dir), "--check")
    assert code == 0, err
    assert "OK" in out
    serving = list(yaml.safe_load_all((out_dir / "serving.yaml").read_text()))
    deployment = one(serving, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert ["--enable-lora", "--max-loras=3", "--max-lora-rank=8"] == args[-3:]
    syncer = yaml.safe_load(one(serving, "ConfigMap")["data"]["configmap.yaml"])
    assert [m["id"] for m in syncer["vLLMLoRAConfig"]["ensureExist"]["models"]] == ["from-file", "sql-lora", "support"]
    gateway = list(yaml.safe_load_all((out_dir / "gateway.yaml").read_text()))
    assert {o["metadata"]["name"] for o in gateway if o["kind"] == "InferenceObjective"} == {
        "gemma-3-1b-it", "from-file", "sql-lora", "support"}
    readme = (out_dir / "README.md").read_text()
    assert "kubectl -n inferstack edit configmap vllm-l4-gemma-3-1b-it-adapters" in readme


def test_bare_lora_flag_enables_it(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "render", "--model", "gemma-3-1b-it", "--accelerator", "l4", "--bucket", BUCKET,
                       "--lora", "--output", str(tmp_path))
    assert code == 0, err
    assert "--enable-lora" in (tmp_path / "serving.yaml").read_text()


@pytest.mark.parametrize(("flags", "message"), [
    (["--lora", "sql-lora"], "--lora has value 'sql-lora'; expected NAME=SOURCE"),
    (["--lora", "a=org/x", "--lora", "a=org/y"], "--lora names adapter 'a' twice"),
    (["--lora", "a=/home/me/adapter"], "adapter 'a' has source '/home/me/adapter': a local folder cannot be read"),
])
def test_bad_lora_flags_exit_2_with_the_reason(capsys, tmp_path: Path, flags: list[str],  # type: ignore[no-untyped-def]
                                               message: str) -> None:
    code, _, err = run(capsys, "render", "--model", "gemma-3-1b-it", "--accelerator", "l4", "--bucket", BUCKET,
                       *flags, "--output", str(tmp_path / "out"))
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()
