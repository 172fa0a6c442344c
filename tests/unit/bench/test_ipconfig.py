"""Our configs are checked by inference-perf's own schema (its pydantic models, in its venv)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from inferstack.bench.interpreter import bench_python
from inferstack.bench.ipconfig import build_config, write_config
from inferstack.bench.settings import BenchSettings

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "bench"
TOKENIZER = Path("/nonexistent/tokenizer")  # only validated by schema, never loaded here

CASES = {
    "linear-sweep": dict(profile="linear-sweep", stages=3, duration_s=5),
    "constant": dict(profile="constant", rate=2, stages=2, duration_s=5),
    "poisson-shared-prefix-chat": dict(profile="poisson", rate=3, stages=3, dataset="shared-prefix", api="chat"),
    "concurrency": dict(profile="concurrency", rate=4, stages=2),
    "documents": dict(profile="constant", rate=1, stages=1, dataset=str(EXAMPLES / "documents")),
    "prometheus": dict(profile="constant", rate=1, stages=1, prometheus_url="http://127.0.0.1:9099"),
}


def _config(tmp_path: Path, name: str) -> dict:  # type: ignore[type-arg]
    s = BenchSettings(target="http://127.0.0.1:8101/", **CASES[name])  # type: ignore[arg-type]
    return build_config(s, tmp_path / name, "m", TOKENIZER)


def test_profiles_map_to_load_sections(tmp_path: Path) -> None:
    sweep = _config(tmp_path, "linear-sweep")["load"]
    assert sweep["type"] == "constant" and sweep["sweep"]["type"] == "linear"
    assert sweep["sweep"]["num_stages"] == 3 and sweep["sweep"]["stage_duration"] == 5 and "stages" not in sweep
    const = _config(tmp_path, "constant")
    assert const["load"]["stages"] == [{"rate": 1.0, "duration": 5}, {"rate": 2.0, "duration": 5}]
    assert const["api"] == {"type": "completion", "streaming": True}
    assert const["server"]["base_url"] == "http://127.0.0.1:8101"
    conc = _config(tmp_path, "concurrency")["load"]
    assert conc["type"] == "concurrent"
    assert conc["stages"] == [{"concurrency_level": 2, "num_requests": 8}, {"concurrency_level": 4, "num_requests": 16}]


def test_inference_perf_accepts_every_config(tmp_path: Path) -> None:
    paths = [write_config(_config(tmp_path, n), tmp_path / f"{n}.yaml") for n in CASES]
    check = (
        "import sys, json\n"
        "from inference_perf.config import read_config\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    c = read_config(p)\n"
        "    out[p] = [c.load.type.value, c.data.type.value, c.api.type.value, len(c.load.stages),\n"
        "              c.metrics.type.value if c.metrics else None]\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [str(bench_python()), "-c", check, *map(str, paths)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got[str(paths[0])] == ["constant", "synthetic", "completion", 0, None]
    assert got[str(paths[2])] == ["poisson", "shared_prefix", "chat", 3, None]
    assert got[str(paths[3])] == ["concurrent", "synthetic", "completion", 2, None]
    assert got[str(paths[4])][1] == "shareGPT"
    assert got[str(paths[5])][4] == "prometheus"  # --prometheus: inference-perf reads the stack's Prometheus


def test_config_is_plain_yaml(tmp_path: Path) -> None:
    path = write_config(_config(tmp_path, "constant"), tmp_path / "c.yaml")
    assert yaml.safe_load(path.read_text())["report"]["request_lifecycle"]["percentiles"] == [50, 90, 95, 99]


@pytest.mark.parametrize("name", list(CASES))
def test_storage_goes_into_the_run_dir(tmp_path: Path, name: str) -> None:
    assert _config(tmp_path, name)["storage"]["local_storage"]["path"].endswith(f"{name}/inference-perf")
