"""What the gateway's processes report (the ``gateway`` part of the stack's status): typed, and
light to import (the stack's status file is read by every CLI call; the processes' code is not)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FLOW_FAIRNESS_METRIC", "FLOW_QUEUE_METRIC", "FLOW_REJECTED_METRIC", "FLOW_SERVED_METRIC",
           "HELD_REQUESTS_METRIC", "REQUESTS_METRIC", "EnvoyStatus", "EppStatus", "FlowControlStatus", "GatewayStatus",
           "ProcessStatus", "TenantFlow", "epp_metrics_pages", "picker_name", "read_flow_control"]

# The picker's metrics its readers use (the autoscaler, `inferstack status`), named once: the EPP
# exports them under these names (gateway/epp_metrics.py). Counters' samples end in ``_total``.
HELD_REQUESTS_METRIC = "inferstack_epp_held_requests"
REQUESTS_METRIC = "inferstack_epp_requests"  # by model, target, endpoint and outcome (routed, shed, ...)
FLOW_QUEUE_METRIC = "inferstack_epp_flow_queue_requests"
FLOW_SERVED_METRIC = "inferstack_epp_flow_served_weighted_tokens"
FLOW_REJECTED_METRIC = "inferstack_epp_flow_rejected_requests"
FLOW_FAIRNESS_METRIC = "inferstack_epp_flow_fairness_index"


class ProcessStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pid: int | None
    state: str  # stopped | running | exited(CODE)
    restarts: int
    log: str


class EnvoyStatus(ProcessStatus):
    port: int
    admin_port: int


class EppStatus(ProcessStatus):
    grpc_port: int
    metrics_port: int


class GatewayStatus(BaseModel):
    """What ``Gateway.status()`` reports (the ``gateway`` part of the stack's status)."""
    model_config = ConfigDict(extra="forbid")
    state: str  # stopped | starting | running | degraded | failed
    url: str
    base_url: str
    run_dir: str
    envoy: EnvoyStatus
    epp: EppStatus  # the first picker (``pickers[0]``)
    pickers: list[EppStatus] = Field(default_factory=list)  # every picker (gateway.pickers), the first first
    epp_failure_mode: str
    flow_control_enabled: bool = False

    @model_validator(mode="after")
    def _one_picker_at_least(self) -> GatewayStatus:
        if not self.pickers:  # a status written before there could be several
            self.pickers = [self.epp]
        return self


class TenantFlow(BaseModel):
    waiting: int = 0  # requests waiting in the picker now
    served_weighted_tokens: float = 0.0  # as flow control charges them, since the picker started
    rejected: dict[str, int] = Field(default_factory=dict)  # 429s by reason: queue_full, wait_expired


class FlowControlStatus(BaseModel):
    """The picker's queue now, per tenant (``inferstack status --json``: ``gateway.flow_control``),
    read from its /metrics page. Tenants past the picker's label bound count as ``other``; requests
    naming no tenant as ``none``."""
    enabled: bool
    waiting: int  # every waiting request (scale-from-zero holds included)
    fairness_index: float | None = None  # Jain's, over the last minute's tenants that waited (flow control)
    tenants: dict[str, TenantFlow]

    def summary(self) -> str:
        """One line for ``inferstack status``."""
        per_tenant = ", ".join(f"{t} {f.waiting}" for t, f in self.tenants.items() if f.waiting) or "none"
        fairness = f"{self.fairness_index:.2f}" if self.fairness_index is not None else "-"
        return f"flow control  {self.waiting} waiting (by tenant: {per_tenant}); fairness index {fairness}"


def picker_name(i: int) -> str:
    """The process name (and log file stem) of picker ``i``: ``epp``, ``epp-1``, ..."""
    return "epp" if i == 0 else f"epp-{i}"


def epp_metrics_pages(gateway: GatewayStatus, timeout_s: float) -> list[str]:
    """The text of each picker's /metrics page (those that answer; none: an empty list). Each picker
    counts what it routed, held or refused itself: readers sum over the pages."""
    import httpx  # here: this module is read by every CLI call

    pages = []
    for picker in gateway.pickers:
        try:
            response = httpx.get(f"http://127.0.0.1:{picker.metrics_port}/metrics", timeout=timeout_s)
            response.raise_for_status()
        except httpx.HTTPError:
            continue
        pages.append(response.text)
    return pages


def read_flow_control(pages: list[str], enabled: bool) -> FlowControlStatus:
    """``FlowControlStatus`` from the text of the pickers' /metrics pages (summed; the fairness index
    is the lowest a picker reports)."""
    from inferstack.engine.metrics import parse_text

    tenants: dict[str, TenantFlow] = {}
    waiting = 0.0
    fairness = None
    served, rejected = FLOW_SERVED_METRIC + "_total", FLOW_REJECTED_METRIC + "_total"
    names = (HELD_REQUESTS_METRIC, FLOW_QUEUE_METRIC, served, rejected, FLOW_FAIRNESS_METRIC)
    for sample in (s for page in pages for s in parse_text(page, names).samples):
        if sample.name == HELD_REQUESTS_METRIC:
            waiting += sample.value
            continue
        if sample.name == FLOW_FAIRNESS_METRIC:
            fairness = sample.value if fairness is None else min(fairness, sample.value)
            continue
        flow = tenants.setdefault(sample.labels.get("tenant", "none"), TenantFlow())
        if sample.name == FLOW_QUEUE_METRIC:
            flow.waiting += int(sample.value)
        elif sample.name == served:
            flow.served_weighted_tokens += sample.value
        else:
            reason = sample.labels.get("reason", "")
            flow.rejected[reason] = flow.rejected.get(reason, 0) + int(sample.value)
    return FlowControlStatus(enabled=enabled, waiting=int(waiting), fairness_index=fairness,
                             tenants=dict(sorted(tenants.items())))
