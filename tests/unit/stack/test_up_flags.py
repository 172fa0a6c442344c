import os
import subprocess
import sys

import pytest

from inferstack.cli import build_parser
from inferstack.errors import ConfigError
from inferstack.commands.stack import _overrides, with_autoscaling
from inferstack.stack.config import StackConfig


def _parse(*argv):
    return build_parser().parse_args(["up", *argv])


def test_no_flags_no_overrides():
    assert _overrides(_parse()) == {}


def test_flags_become_nested_config_overrides():
    args = _parse("--replicas", "2", "--spec", "eagle3", "--spec-model", "org/head", "--spec-tokens", "3",
                  "--base-port", "9100", "--kv-cache-gib", "2", "--max-model-len", "1024", "--compiled",
                  "--gateway-port", "8181", "--pickers", "2", "--model", "org/m")
    assert _overrides(args) == {
        "model": "org/m",
        "replicas": 2,
        "speculative": {"method": "eagle3", "num_speculative_tokens": 3, "model": "org/head"},
        "engine": {"base_port": 9100, "max_model_len": 1024, "kv_cache_gib": 2, "enforce_eager": False},
        "gateway": {"port": 8181, "pickers": 2},
    }


def test_no_gateway():
    assert _overrides(_parse("--no-gateway")) == {"gateway": {"enabled": False}}


def test_monitoring_flag():
    assert _overrides(_parse("--monitoring")) == {"monitoring": {"enabled": True}}


def test_monitoring_scrapes_every_part_of_the_stack(tmp_path):
    from pathlib import Path

    from inferstack.commands.stack import _monitoring_factory

    assert _monitoring_factory(StackConfig(), None) is None
    config = StackConfig.model_validate({"monitoring": {"enabled": True, "port": 9555}})
    make, supervisor_port = _monitoring_factory(config, None)
    prometheus = make(Path(tmp_path / "replicas.json"), tmp_path)
    t = prometheus.targets
    assert t.supervisor == f"127.0.0.1:{supervisor_port}" and supervisor_port != 9555
    assert t.pickers == (f"127.0.0.1:{config.gateway.epp.metrics_port}",)
    assert t.envoy_admin == f"127.0.0.1:{config.gateway.admin_port}" and t.batch is None
    assert prometheus.url == "http://127.0.0.1:9555"
    two = StackConfig.model_validate({"monitoring": {"enabled": True, "port": 9555}, "gateway": {"pickers": 2}})
    m = two.gateway.epp.metrics_port
    assert _monitoring_factory(two, None)[0](tmp_path / "r.json", tmp_path).targets.pickers == (
        f"127.0.0.1:{m}", f"127.0.0.1:{m + 1}")
    with pytest.raises(ValueError, match=r"gateway.epp.metrics_port \+ 1"):
        StackConfig.model_validate({"monitoring": {"enabled": True, "port": m + 1}, "gateway": {"pickers": 2}})


def test_autoscale_flag_uses_one_replica_per_core_at_most_by_default():
    config = with_autoscaling(StackConfig(), True, None, None)
    assert config.autoscaling.max_replicas == len(os.sched_getaffinity(0))
    assert config.autoscaling.min_replicas == 1
    assert with_autoscaling(StackConfig(), True, 0, 3).autoscaling.model_dump()["min_replicas"] == 0
    assert with_autoscaling(StackConfig(), False, None, None).autoscaling is None


def test_min_max_override_the_config_section_and_are_validated():
    config = StackConfig.model_validate({"autoscaling": {"metric": "kv", "target": 0.7, "max_replicas": 5}})
    scaled = with_autoscaling(config, False, 2, None)
    assert (scaled.autoscaling.min_replicas, scaled.autoscaling.max_replicas) == (2, 5)
    assert scaled.autoscaling.label() == "kv:0.7"
    with pytest.raises(ConfigError, match=r"min_replicas \(3\) cannot exceed max_replicas \(2\)"):
        with_autoscaling(StackConfig(), True, 3, 2)
    with pytest.raises(ConfigError, match="--min/--max bound the autoscaler: add --autoscale"):
        with_autoscaling(StackConfig(), False, None, 2)


def test_scale_without_a_running_stack_says_so(tmp_path):
    env = {**os.environ, "INFERSTACK_STATE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "inferstack", "scale", "2"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no running stack to change (start one with `inferstack up --detach`)" in proc.stderr
