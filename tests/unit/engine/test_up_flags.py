from inferstack.cli import build_parser
from inferstack.engine.cli import _overrides


def _parse(*argv):
    return build_parser().parse_args(["up", *argv])


def test_no_flags_no_overrides():
    assert _overrides(_parse()) == {}


def test_flags_become_nested_config_overrides():
    args = _parse("--replicas", "2", "--spec", "eagle3", "--spec-model", "org/head", "--spec-tokens", "3",
                  "--base-port", "9100", "--kv-cache-gib", "2", "--max-model-len", "1024", "--compiled",
                  "--gateway-port", "8181", "--model", "org/m")
    assert _overrides(args) == {
        "model": "org/m",
        "replicas": 2,
        "speculative": {"method": "eagle3", "num_speculative_tokens": 3, "model": "org/head"},
        "engine": {"base_port": 9100, "max_model_len": 1024, "kv_cache_gib": 2, "enforce_eager": False},
        "gateway": {"port": 8181},
    }


def test_no_gateway():
    assert _overrides(_parse("--no-gateway")) == {"gateway": {"enabled": False}}
