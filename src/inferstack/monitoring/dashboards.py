"""The stack's Grafana dashboards, defined once here and written as JSON files a user imports
(``dashboards/*.json`` in this package: ``python -m inferstack.monitoring.dashboards --write``
regenerates them; a unit test fails when they differ from these definitions). Every panel
query is also checked against a live stack's Prometheus by the never-blank test.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from inferstack.monitoring.rules import GATEWAY_SELECTOR
from inferstack.wire import VllmMetric as V

__all__ = ["DASHBOARDS", "DASHBOARDS_DIR", "Dashboard", "Panel", "dashboard_json", "panel_queries"]

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]


def _p(title: str, unit: str, *queries: tuple[str, str]) -> Panel:
    return Panel(title, tuple(queries), unit)


DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard("inferstack-overview", "inferstack / overview", (
        _p("Gateway requests/s by answer class", "reqps",
           (f"sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{{{GATEWAY_SELECTOR}}}[1m]))",
            "{{envoy_response_code_class}}xx")),
        _p("Time to first token", "s", ("inferstack:ttft_seconds:p50", "p50"), ("inferstack:ttft_seconds:p95", "p95"),
           ("inferstack:ttft_seconds:p99", "p99")),
        _p("Time per output token", "s", ("inferstack:tpot_seconds:p50", "p50"),
           ("inferstack:tpot_seconds:p95", "p95"), ("inferstack:tpot_seconds:p99", "p99")),
        _p("End-to-end latency", "s", ("inferstack:e2e_seconds:p50", "p50"), ("inferstack:e2e_seconds:p95", "p95"),
           ("inferstack:e2e_seconds:p99", "p99")),
        _p("Tokens/s", "short", ("inferstack:generation_tokens:rate1m", "output"),
           ("inferstack:prompt_tokens:rate1m", "prompt")),
        _p("Replicas", "short", ("inferstack_stack_ready_replicas", "ready"),
           ("inferstack_stack_desired_replicas", "desired")),
    )),
    Dashboard("inferstack-replicas", "inferstack / replicas", (
        _p("Requests running per replica", "short", (V.RUNNING.value, "{{replica}}")),
        _p("Requests waiting per replica", "short", (V.WAITING.value, "{{replica}}")),
        _p("KV cache use per replica", "percentunit", (V.KV_CACHE_USAGE.value, "{{replica}}")),
        _p("Prefix cache hit ratio", "percentunit", ("inferstack:prefix_cache_hit_ratio:rate1m", "hit ratio")),
        _p("Speculative decoding acceptance", "percentunit",
           ("inferstack:spec_acceptance_ratio:rate1m", "accepted / drafted")),
        _p("Queue time", "s", ("inferstack:queue_seconds:p50", "p50"), ("inferstack:queue_seconds:p95", "p95"),
           ("inferstack:queue_seconds:p99", "p99")),
        _p("Fullest KV cache", "percentunit", ("inferstack:kv_cache_usage:max", "max")),
        _p("Preemptions/s per replica", "short",
           (f"sum by (replica) (rate({V.PREEMPTIONS.total}[1m]))", "{{replica}}")),
        _p("Replica up", "short", ('up{job="vllm"}', "{{replica}}")),
    )),
    Dashboard("inferstack-gateway", "inferstack / gateway and picker", (
        _p("Picker decisions/s by outcome", "reqps", ("sum by (outcome) (inferstack:picker_requests:rate1m)",
                                                      "{{outcome}}")),
        _p("Picker latency p99", "s", ("inferstack:picker_latency_seconds:p99", "p99")),
        _p("Picker time per phase, p99", "s",
           ("histogram_quantile(0.99, sum by (le, phase) (rate(inferstack_epp_phase_seconds_bucket[1m])))",
            "{{phase}}")),
        _p("Requests waiting in the picker", "short", ("inferstack_epp_held_requests", "waiting")),
        _p("Tokens/s per tenant", "short", ("inferstack:tenant_tokens:rate1m", "{{tenant}} {{kind}}")),
        _p("Requests in flight to the pool (Envoy)", "short",
           ('envoy_cluster_upstream_rq_active{envoy_cluster_name="inference_pool"}', "active")),
        _p("Picker up", "short", ('up{job="picker"}', "picker"), ('up{job="envoy"}', "envoy")),
    )),
    Dashboard("inferstack-batch", "inferstack / batch", (
        _p("Batches by status", "short", ("inferstack_batch_batches", "{{status}}")),
        _p("Batch lines/s", "short", ("sum by (outcome) (rate(inferstack_batch_lines_total[5m]))", "{{outcome}}")),
        _p("Dispatch concurrency", "short", ("inferstack_batch_dispatch_in_flight", "in flight"),
           ("inferstack_batch_dispatch_concurrency_limit", "limit")),
    )),
    Dashboard("inferstack-autoscaling", "inferstack / autoscaling", (
        _p("Desired and ready replicas", "short", ("inferstack_stack_desired_replicas", "desired"),
           ("inferstack_stack_ready_replicas", "ready")),
        _p("Autoscaler inputs: requests waiting and running (all replicas)", "short",
           ("inferstack:requests_waiting:sum", "waiting"), ("inferstack:requests_running:sum", "running")),
        _p("Scaling events (10 min)", "short",
           ("sum by (source) (increase(inferstack_stack_scaling_events_total[10m]))", "{{source}}")),
        _p("Replica restarts", "short", ("inferstack_stack_replica_restarts", "{{replica}}")),
    )),
)


def panel_queries() -> list[tuple[str, str, str]]:
    """Every (dashboard, panel, PromQL) of every dashboard."""
    return [(d.title, p.title, q) for d in DASHBOARDS for p in d.panels for q, _ in p.queries]


def dashboard_json(d: Dashboard) -> dict[str, object]:
    """Grafana's dashboard model (schema 39), with a Prometheus data-source variable."""
    panels = []
    for i, p in enumerate(d.panels):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": p.title,
            "gridPos": {"x": (i % 2) * 12, "y": (i // 2) * 8, "w": 12, "h": 8},
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "targets": [{"refId": chr(ord("A") + j), "expr": q, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                        for j, (q, legend) in enumerate(p.queries)],
        })
    return {
        "uid": d.uid, "title": d.title, "tags": ["inferstack", "vllm"], "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "5s", "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": panels,
    }


def render_files() -> dict[str, str]:
    """File name -> JSON text, as they are kept in ``DASHBOARDS_DIR``."""
    return {f"{d.uid.removeprefix('inferstack-')}.json": json.dumps(dashboard_json(d), indent=2) + "\n"
            for d in DASHBOARDS}


def main() -> int:
    ap = argparse.ArgumentParser(description="Write the stack's Grafana dashboards as JSON files.")
    ap.add_argument("--write", type=Path, default=DASHBOARDS_DIR, help=f"folder (default {DASHBOARDS_DIR})")
    args = ap.parse_args()
    args.write.mkdir(parents=True, exist_ok=True)
    for name, text in render_files().items():
        (args.write / name).write_text(text)
        print(args.write / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
