"""What the stack's Prometheus records and alerts on, defined once: the local Prometheus loads it
(``rules_document``), GKE gets it as a GMP ``Rules`` object (kube), dashboards read the recorded
series, and the never-blank test queries every expression against a live stack.

An alert is its ``signal`` (an expression that has data whenever the stack is up) and a
``condition`` on it (``> 0.9``): the test checks the signal, since a healthy stack's condition is
empty by design. Alerts on a scrape job's ``up`` name the job by role (``{replicas}``,
``{picker}``): the local Prometheus's job names by default, the PodMonitorings' names on GKE; an
alert on Envoy's series (``needs_envoy``) applies where our Envoy runs, not behind GKE's gateway.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferstack.wire import ENVOY_STAT_PREFIX
from inferstack.wire import VllmMetric as V

__all__ = ["ALERTS", "GATEWAY_SELECTOR", "LOCAL_JOBS", "RECORDING_RULES", "Alert", "Recording", "rules_document"]

LOCAL_JOBS = {"replicas": "vllm", "picker": "picker"}  # role -> the local Prometheus's job name


@dataclass(frozen=True, slots=True)
class Recording:
    record: str
    expr: str


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    signal: str
    condition: str  # appended to the signal: the alert fires while the result is not empty
    for_: str
    severity: str
    summary: str
    needs_envoy: bool = False

    def expr(self, jobs: dict[str, str] | None = None) -> str:
        return f"({self.signal_for(jobs)}) {self.condition}"

    def signal_for(self, jobs: dict[str, str] | None = None) -> str:
        return self.signal.format(**(jobs or LOCAL_JOBS))


def _quantiles(name: str, histogram: V) -> list[Recording]:
    return [Recording(f"inferstack:{name}:p{q}",
                      f"histogram_quantile(0.{q}, sum by (le) (rate({histogram.value}_bucket[1m])))")
            for q in ("50", "95", "99")]


RECORDING_RULES: tuple[Recording, ...] = (
    *_quantiles("ttft_seconds", V.TTFT),
    *_quantiles("tpot_seconds", V.TPOT),
    *_quantiles("e2e_seconds", V.E2E),
    *_quantiles("queue_seconds", V.QUEUE_TIME),
    Recording("inferstack:requests_waiting:sum", f"sum({V.WAITING})"),
    Recording("inferstack:requests_running:sum", f"sum({V.RUNNING})"),
    Recording("inferstack:kv_cache_usage:max", f"max({V.KV_CACHE_USAGE})"),
    Recording("inferstack:generation_tokens:rate1m", f"sum(rate({V.GENERATION_TOKENS.total}[1m]))"),
    Recording("inferstack:prompt_tokens:rate1m", f"sum(rate({V.PROMPT_TOKENS.total}[1m]))"),
    Recording("inferstack:prefix_cache_hit_ratio:rate1m",
              f"sum(rate({V.PREFIX_CACHE_HITS.total}[1m])) / clamp_min(sum(rate({V.PREFIX_CACHE_QUERIES.total}[1m])), 1)"),
    Recording("inferstack:spec_acceptance_ratio:rate1m",
              f"sum(rate({V.SPEC_ACCEPTED_TOKENS.total}[1m])) / "
              f"clamp_min(sum(rate({V.SPEC_DRAFT_TOKENS.total}[1m])), 1)"),
    Recording("inferstack:picker_requests:rate1m",
              "sum by (target_model, outcome) (rate(inferstack_epp_requests_total[1m]))"),
    Recording("inferstack:tenant_tokens:rate1m", "sum by (tenant, kind) (rate(inferstack_epp_tenant_tokens_total[1m]))"),
    Recording("inferstack:picker_latency_seconds:p99",
              "histogram_quantile(0.99, sum by (le) (rate(inferstack_epp_scheduling_latency_seconds_bucket[1m])))"),
)

GATEWAY_SELECTOR = f'envoy_http_conn_manager_prefix="{ENVOY_STAT_PREFIX}"'  # the gateway's Envoy series

ALERTS: tuple[Alert, ...] = (
    Alert("InferstackReplicaDown", 'up{{job="{replicas}"}}', "== 0", "1m", "critical",
          "A vLLM replica has not answered its /metrics scrape for a minute."),
    Alert("InferstackQueueGrowing", "inferstack:requests_waiting:sum", "> 8", "2m", "warning",
          "Requests have waited in vLLM's queues for two minutes: add replicas or shed load."),
    Alert("InferstackKvCacheNearFull", "inferstack:kv_cache_usage:max", "> 0.9", "2m", "warning",
          "A replica's KV cache has been over 90% full for two minutes: expect preemptions."),
    Alert("InferstackPickerDown", 'up{{job="{picker}"}}', "== 0", "30s", "critical",
          "The endpoint picker does not answer: new requests get 503 until it is back."),
    Alert("InferstackGatewayErrors",
          f'sum(rate(envoy_http_downstream_rq_xx{{{{{GATEWAY_SELECTOR},envoy_response_code_class="5"}}}}[5m])) / '
          f"clamp_min(sum(rate(envoy_http_downstream_rq_total{{{{{GATEWAY_SELECTOR}}}}}[5m])), 1e-9)",
          "> 0.05", "5m", "warning", "More than 5% of the gateway's answers were 5xx over five minutes.",
          needs_envoy=True),
)


def rules_document(jobs: dict[str, str] | None = None, envoy: bool = True) -> dict[str, object]:
    """Prometheus's rule-file YAML (as a dict): one group of recording rules, one of alerts;
    ``jobs``: role -> scrape job name (default: the local Prometheus's)."""
    return {"groups": [
        {"name": "inferstack.recording", "rules": [{"record": r.record, "expr": r.expr} for r in RECORDING_RULES]},
        {"name": "inferstack.alerts", "rules": [
            {"alert": a.name, "expr": a.expr(jobs), "for": a.for_, "labels": {"severity": a.severity},
             "annotations": {"summary": a.summary}} for a in ALERTS if envoy or not a.needs_envoy]},
    ]}
