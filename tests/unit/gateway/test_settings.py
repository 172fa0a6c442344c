from pathlib import Path

import pytest

from inferstack.errors import ConfigError
from inferstack.gateway.scheduling import Scheduler
from inferstack.gateway.settings import EppSettings, GatewaySettings, load_epp_settings

EXAMPLES = sorted((Path(__file__).parents[3] / "examples" / "gateway").glob("*.yaml"))


def test_examples_exist():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads_and_builds_a_scheduler(path):
    settings = load_epp_settings(path)
    Scheduler(settings.scheduler)


def test_the_renderer_shape_is_accepted(tmp_path):
    f = tmp_path / "epp.yaml"
    f.write_text("""
grpc_port: 9002
metrics_port: 9090
discovery: {kind: kubernetes, namespace: NS, label_selector: {app: NAME}, target_port: 8000}
scrape_interval_ms: 75
scheduler: {scorers: [{type: queue, weight: 1}, {type: kv-cache, weight: 1}, {type: prefix, weight: 1}], picker: max-score}
objectives: [{model: SERVED_NAME, priority: 0}]
rewrites: [{model: chat, targets: [{model: base, weight: 90}, {model: adapter, weight: 10}]}]
saturation: {queue_depth_threshold: 5, kv_cache_util_threshold: 0.8, metrics_staleness_ms: 200}
""")
    s = load_epp_settings(f)
    assert s.discovery.kind == "kubernetes" and s.discovery.label_selector == {"app": "NAME"}
    assert [x.type for x in s.scheduler.scorers] == ["queue", "kv-cache", "prefix"]


def test_defaults():
    s = GatewaySettings()
    assert (s.port, s.listen_host, s.epp.grpc_port, s.epp.scheduler.picker) == (8080, "127.0.0.1", 9002, "max-score")
    assert [x.type for x in EppSettings().scheduler.scorers] == ["prefix", "no-hit-lru", "queue", "kv-cache"]


@pytest.mark.parametrize(("text", "message"), [
    ("grpc_port: 0", r"'grpc_port' has value 0"),
    ("unknown_key: 1", r"unknown key 'unknown_key'"),
    ("discovery: {kind: dns}", r"'discovery' has value"),
    ("scheduler: {picker: best}", r"'scheduler.picker' has value 'best'"),
    ("saturation: {kv_cache_util_threshold: 1.5}", r"kv_cache_util_threshold"),
    ("scheduler: {scorers: [{type: queue, weight: 0}]}", r"weight"),
    ("- a list", "must be a mapping"),
    ("a: [unclosed", "not valid YAML"),
])
def test_bad_configs_name_key_and_value(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_epp_settings(f)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read EPP config"):
        load_epp_settings(tmp_path / "nope.yaml")


def test_hold_is_set_on_the_gateway_and_must_fit_envoys_idle_timeout():
    from inferstack.configfile import validate
    from inferstack.gateway.settings import HoldSettings

    s = validate(GatewaySettings, {"hold": {"enabled": True, "timeout_s": 30, "max_requests": 8}}, "gw")
    assert s.hold == HoldSettings(enabled=True, timeout_s=30, max_requests=8) and s.epp.hold == HoldSettings()
    with pytest.raises(ConfigError, match="set the hold on the gateway"):
        validate(GatewaySettings, {"epp": {"hold": {"enabled": True}}}, "gw")
    with pytest.raises(ConfigError, match=r"hold.timeout_s \(300\) \+ 5 s must be below stream_idle_timeout_s"):
        validate(GatewaySettings, {"hold": {"enabled": True, "timeout_s": 300}}, "gw")
    assert validate(GatewaySettings, {"hold": {"enabled": True, "timeout_s": 300}, "stream_idle_timeout_s": 400},
                    "gw").hold.timeout_s == 300


@pytest.mark.parametrize(("text", "message"), [
    ("hold: {timeout_s: 0}", r"'hold.timeout_s' has value 0"),
    ("hold: {max_requests: 0}", r"'hold.max_requests' has value 0"),
    ("hold: {enabled: maybe}", r"'hold.enabled' has value 'maybe'"),
    ("hold: {queue: 3}", r"unknown key 'hold.queue'"),
])
def test_bad_hold_settings_name_key_and_value(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_epp_settings(f)
