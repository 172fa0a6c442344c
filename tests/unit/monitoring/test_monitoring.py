"""Monitoring, offline: the rules, alerts, scrape config and every dashboard query pass Prometheus's
own checker (promtool), an alert fires on a synthetic series (promtool test rules), the dashboard
files are what the definitions say, and the supervisor's and batch service's /metrics pages."""

from __future__ import annotations

import json
import subprocess
import textwrap

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from inferstack.batch.api import batch_metrics_page
from inferstack.errors import InferstackError
from inferstack.monitoring import (ALERTS, DASHBOARDS_DIR, RECORDING_RULES, MonitoringSettings, ScrapeTargets,
                                   find_prometheus, panel_queries, prometheus_config, rules_document,
                                   write_replica_targets)
from inferstack.monitoring.dashboards import render_files
from inferstack.process import free_port
from inferstack.stack.config import load_config
from inferstack.stack.metrics import SupervisorFigures, serve_supervisor_metrics


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(find_prometheus("promtool")), *args], capture_output=True, text=True, timeout=60)


def test_rules_and_alerts_pass_promtool(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(rules_document(), sort_keys=False))
    out = promtool("check", "rules", str(rules))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(RECORDING_RULES) + len(ALERTS)} rules found" in out.stdout


def test_every_dashboard_query_is_valid_promql(tmp_path):
    # promtool parses rule expressions offline: each panel query as a recording rule
    rules = {"groups": [{"name": "panels", "rules": [{"record": f"panel:{i}", "expr": q}
                                                     for i, (_, _, q) in enumerate(panel_queries())]}]}
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    out = promtool("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    recorded = {r.record for r in RECORDING_RULES}
    used = {q for _, _, q in panel_queries()}
    assert {r for r in recorded if any(r in q for q in used)} == recorded, "a recording rule no dashboard shows"


def test_the_scrape_config_passes_promtool(tmp_path):
    settings = MonitoringSettings(enabled=True, port=9999, scrape_interval_s=2.5)
    replicas = tmp_path / "replicas.json"
    write_replica_targets(replicas, [("r0", "127.0.0.1:8101"), ("r1", "127.0.0.1:8102")])
    assert json.loads(replicas.read_text())[1] == {"targets": ["127.0.0.1:8102"], "labels": {"replica": "r1"}}
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(rules_document()))
    cfg = prometheus_config(settings, ScrapeTargets(replicas, pickers=("127.0.0.1:9091",), envoy_admin="127.0.0.1:9901",
                                                    batch="127.0.0.1:8090", supervisor="127.0.0.1:9092"), rules)
    assert cfg["global"]["scrape_interval"] == "2500ms"  # type: ignore[index]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}  # type: ignore[attr-defined]
    assert set(jobs) == {"vllm", "picker", "envoy", "batch", "supervisor", "prometheus"}
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    out = promtool("check", "config", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_alert_fires_on_a_synthetic_series(tmp_path):
    summary = {a.name: a.summary for a in ALERTS}
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(rules_document()))
    test = tmp_path / "test.yml"
    test.write_text(textwrap.dedent(f"""\
        rule_files: [{rules}]
        evaluation_interval: 30s
        tests:
        - interval: 30s
          input_series:
          - series: 'vllm:kv_cache_usage_perc{{replica="r0"}}'
            values: '0.5 0.95 0.95 0.95 0.95 0.95 0.95'
          - series: 'up{{job="vllm", replica="r1"}}'
            values: '1 1 0 0 0 0 0'
          alert_rule_test:
          - eval_time: 1m
            alertname: InferstackKvCacheNearFull
            exp_alerts: []
          - eval_time: 3m
            alertname: InferstackKvCacheNearFull
            exp_alerts: [{{exp_labels: {{severity: warning}},
                          exp_annotations: {{summary: "{summary['InferstackKvCacheNearFull']}"}}}}]
          - eval_time: 3m
            alertname: InferstackReplicaDown
            exp_alerts: [{{exp_labels: {{severity: critical, job: vllm, replica: r1}},
                          exp_annotations: {{summary: "{summary['InferstackReplicaDown']}"}}}}]
        """))
    out = promtool("test", "rules", str(test))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dashboard_files_are_the_definitions():
    files = render_files()
    on_disk = {p.name: p.read_text() for p in DASHBOARDS_DIR.glob("*.json")}
    assert on_disk == files, "regenerate: .venv/bin/python -m inferstack.monitoring.dashboards"
    for text in files.values():
        doc = json.loads(text)
        assert doc["panels"] and all(t["expr"] for p in doc["panels"] for t in p["targets"])


def test_a_missing_prometheus_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(InferstackError, match="apt-get install prometheus"):
        find_prometheus()


def test_monitoring_config_and_flag():
    assert not load_config().monitoring.enabled
    cfg = load_config(overrides={"monitoring": {"enabled": True, "port": 9500}})
    assert cfg.monitoring.enabled and cfg.monitoring.port == 9500
    with pytest.raises(InferstackError, match="retention_time"):
        load_config(overrides={"monitoring": {"retention_time": "forever"}})
    # the defaults do not collide with the picker's /metrics (9090)
    assert load_config(overrides={"monitoring": {"enabled": True}}).monitoring.port == 9099
    with pytest.raises(InferstackError, match="monitoring.port 9090 is also gateway.epp.metrics_port"):
        load_config(overrides={"monitoring": {"enabled": True, "port": 9090}})


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_supervisor_serves_its_figures():
    figures = SupervisorFigures(desired_replicas=3, ready_replicas=2, restarts={"r0": 1, "r1": 0},
                                scaling_events={"scale": 2, "autoscaler": 0, "scale-from-zero": 0},
                                autoscaler_desired=3)
    port = free_port()
    stop = serve_supervisor_metrics(lambda: figures, port)
    try:
        got = _samples(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
    finally:
        stop()
    assert got[("inferstack_stack_desired_replicas", ())] == 3
    assert got[("inferstack_stack_ready_replicas", ())] == 2
    assert got[("inferstack_stack_replica_restarts", (("replica", "r0"),))] == 1
    assert got[("inferstack_stack_scaling_events_total", (("source", "scale"),))] == 2
    assert got[("inferstack_stack_autoscaler_desired_replicas", ())] == 3


def test_the_batch_service_page_lists_every_status():
    class Limit:
        limit = 4

    class FakeDispatcher:  # the counters a Dispatcher keeps
        sent, shed, retried, in_flight, limit = 10, 2, 1, 3, Limit()

    got = _samples(batch_metrics_page({"completed": 2, "in_progress": 1, "failed": 0}, FakeDispatcher()).decode())
    assert got[("inferstack_batch_batches", (("status", "completed"),))] == 2
    assert got[("inferstack_batch_lines_total", (("outcome", "shed"),))] == 2
    assert got[("inferstack_batch_dispatch_in_flight", ())] == 3
    assert got[("inferstack_batch_dispatch_concurrency_limit", ())] == 4
