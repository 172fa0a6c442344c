"""The endpoint picker: an Envoy ext_proc gRPC server speaking the Gateway API Inference Extension
endpoint-picker protocol.

Per request Envoy opens one stream and sends the request headers, then (without waiting for our
answer) the buffered body. Headers with a body to follow get a cached "continue" (we keep the
request id and the x-gateway-inference-objective header); the decision is made once, on the body
(or on the headers of a body-less request):
- routed:  header ``x-gateway-destination-endpoint: ip:port[,fallback...]`` and the same key under
           dynamic metadata namespace ``envoy.lb`` (+ a body mutation when a rewrite changed the model);
- 400 (malformed body), 404 (no endpoint serves the requested model), 429 (sheddable and
  saturated), 503 (no ready endpoint): an immediate JSON error response.
Served models: a request goes only to endpoints whose ``GET /v1/models`` (polled in the background,
``served_models``) lists its model after rewrites, or whose list is not known yet; 404 when every
ready endpoint's list is known and none has it (``models_poll: false`` turns this off). Before a 404
the EPP polls the ready endpoints' lists once more (bounded, coalesced across requests): an adapter
loaded a moment ago is routed, not refused until the next periodic poll; meanwhile Envoy gets only
``override_message_timeout``, which it ignores unless ``max_message_timeout`` is set, and the
recheck ends well within the default 2 s per-message timeout. ``GET /v1/models`` is answered by the
EPP: the union of the ready endpoints' lists, polled once more after the request arrived (the same
shared recheck), so an adapter loaded on one replica only, or a moment ago, is listed; while a
list is unknown it is routed to a replica like any request.
Then the EPP ends the gRPC stream itself: Envoy marks the request's processing complete, so a
routed stream never depends on the EPP again (an EPP crash or restart cuts no response).
With ``completion: access-log`` Envoy's gRPC access log (same port) reports each response's end,
which closes the request's in-flight entry (``InFlightLedger``).
Scale from zero (``hold.enabled``): while no endpoint is routable, a request is held (``HoldQueue``,
bounded, FIFO): the EPP answers at once with only ``override_message_timeout`` (Envoy's per-message
timer then runs for the hold timeout plus a margin) and later, on the same stream, with the routing
decision once an endpoint is ready and Envoy has loaded it (``EnvoyLoadWatch``), or a JSON 503 at
the hold timeout or when the hold queue is full; a request arriving while others are held queues
behind them. gRPC health (``grpc.health.v1.Health/Check``) answers SERVING while an endpoint is
ready, else NOT_SERVING; with hold enabled always SERVING (the EPP takes requests with no replica,
so Kubernetes probes must not take it out of service then).
Invariants: the hot path parses each protobuf and the JSON body once, reads only in-memory state,
and reuses serialized answers per destination; discovery, scraping, the /v1/models poll, the EDS
mirror and metrics export run in background tasks / threads. The gRPC transport is ``h2grpc`` (on
the h2 library, default) or grpcio's asyncio server (``server: grpcio``), both able to answer a
held request later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import cast
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import duration_pb2, struct_pb2

from inferstack.gateway.datastore import Datastore, Endpoint
from inferstack.gateway.discovery import make_discovery
from inferstack.gateway.envoy_config import CLUSTER_NAME
from inferstack.gateway.epp_metrics import EppMetrics
from inferstack.gateway.h2grpc import GrpcH2Server, StreamContext
from inferstack.gateway.hold import EnvoyLoadWatch, Held, HoldQueue
from inferstack.gateway.inflight import InFlightLedger
from inferstack.gateway.policy import Objectives, Rewrites, is_saturated, serving
from inferstack.gateway.request import BadRequest, InferenceRequest, parse_body
from inferstack.gateway.scheduling import SchedContext, Scheduler
from inferstack.gateway.scraper import Scraper
from inferstack.gateway.served_models import ModelsPoller
from inferstack.gateway.settings import EppSettings
from inferstack.wire import DESTINATION_HEADER, ENVOY_LB_NAMESPACE, OBJECTIVE_HEADER

__all__ = ["DESTINATION_HEADER", "OBJECTIVE_HEADER", "EndpointPicker", "run_epp", "serve", "write_eds_file"]

log = logging.getLogger(__name__)

METADATA_NAMESPACE = ENVOY_LB_NAMESPACE
_EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
_ACCESS_LOG_SERVICE = "envoy.service.accesslog.v3.AccessLogService"
_HEALTH_SERVICE = "grpc.health.v1.Health"
_HEALTH_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
_HEALTH_NOT_SERVING = b"\x08\x02"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_CONTINUE_HEADERS = pb.ProcessingResponse(request_headers=pb.HeadersResponse()).SerializeToString()


_MAX_LISTED_MODELS = 20  # served names a 404 lists
_MAX_ECHOED_NAME = 200  # characters of the client's model name a 404 repeats
_MODELS_RECHECK_MAX_S = 1.0  # bound of the poll before a 404: half Envoy's default message timeout
_MODELS_RECHECK_WAIT_S = 1.5  # and of the wait for it (one started earlier may still run)


def _error_response(code: int, message: str, err_type: str, param: str | None = None,
                    headers: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    error: dict[str, object] = {"message": message, "type": err_type}
    if param is not None:
        error["param"] = param
    error["code"] = code
    return _immediate_json(code, json.dumps({"error": error}).encode(), err_type, headers)


def _immediate_json(code: int, body: bytes, details: str, headers: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """Envoy answers the client with ``code`` and the JSON ``body`` itself (no model server)."""
    resp = pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status={"code": code}, body=body, details=details,
        headers=pb.HeaderMutation(set_headers=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, raw_value=value), append_action=_OVERWRITE)
            for key, value in (("content-type", b"application/json"), *headers)])))
    return resp.SerializeToString()


# what vLLM answers to any other method on its GET-only /v1/models (the EPP answers that path itself)
_MODELS_METHOD_NOT_ALLOWED = _error_response(
    405, "/v1/models answers GET only", "invalid_request_error", headers=(("allow", b"GET"),))


def _route_response(destination: str, phase: str, new_body: bytes | None = None) -> bytes:
    headers = [base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=DESTINATION_HEADER, raw_value=destination.encode()),
        append_action=_OVERWRITE)]
    if new_body is not None:
        headers.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="content-length", raw_value=str(len(new_body)).encode()),
            append_action=_OVERWRITE))
    common = pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=headers))
    if new_body is not None:
        common.body_mutation.body = new_body
    meta = struct_pb2.Struct()
    meta.update({METADATA_NAMESPACE: {DESTINATION_HEADER: destination}})
    if phase == "body":
        resp = pb.ProcessingResponse(request_body=pb.BodyResponse(response=common), dynamic_metadata=meta)
    else:
        resp = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), dynamic_metadata=meta)
    return resp.SerializeToString()


def write_eds_file(path: Path, cluster_name: str, endpoints: list[str]) -> None:
    """Atomically write an Envoy EDS DiscoveryResponse (JSON) listing ``endpoints``."""
    lb = []
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        lb.append({"endpoint": {"address": {"socket_address": {"address": host.strip("[]"),
                                                                "port_value": int(port)}}}})
    doc = {"version_info": str(time.time_ns()), "resources": [{
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": cluster_name, "endpoints": [{"lb_endpoints": lb}]}]}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


class EndpointPicker:
    """The decision logic, independent of gRPC: raw ProcessingRequest bytes -> raw response bytes."""

    def __init__(self, settings: EppSettings, datastore: Datastore | None = None) -> None:
        self.settings = settings
        self.datastore = datastore or Datastore(reset_in_flight_on_scrape=settings.completion == "scrape")
        self.scheduler = Scheduler(settings.scheduler)
        self.rewrites = Rewrites(settings.rewrites)
        self.objectives = Objectives(settings.objectives)
        self.metrics = EppMetrics(self.datastore, self.scheduler, settings)
        self.in_flight = InFlightLedger(settings.in_flight_timeout_s)
        self._staleness_s = settings.saturation.metrics_staleness_ms / 1000.0
        self._cache: dict[tuple[str, str], bytes] = {}
        self._errors = {
            503: _error_response(503, "no model server endpoint is ready", "service_unavailable"),
            429: _error_response(429, "the model servers are saturated and this request is sheddable",
                                 "too_many_requests"),
        }
        self._latency = self.metrics.latency
        self.models_poller: ModelsPoller | None = None  # set by serve() when models_poll is on
        self._models_refresh: asyncio.Task[None] | None = None  # the 404 path's recheck, shared
        self._models_refresh_at = 0.0  # monotonic start of that recheck
        self._unready: set[str] = set()  # endpoints not ready at their last scrape (or never scraped)
        hold = settings.hold
        self.hold = HoldQueue(hold, self.metrics, self._hold_timed_out) if hold.enabled else None
        self.envoy = EnvoyLoadWatch(settings.envoy_admin_port if hold.enabled else None, CLUSTER_NAME,
                                    self.release_held)
        timer = duration_pb2.Duration()
        timer.FromMilliseconds(round(hold.envoy_timer_s() * 1000))
        self._hold_timer = pb.ProcessingResponse(override_message_timeout=timer).SerializeToString()
        self._hold_full = _error_response(
            503, f"the scale-from-zero hold queue is full ({hold.max_requests} requests already wait for a model "
            "server to become ready); retry later", "service_unavailable")

    def on_endpoints(self, addresses: list[str]) -> None:
        added, removed = self.datastore.set_addresses(addresses)
        self._unready.update(added)
        for a in removed:
            self.scheduler.forget(a)
            self.in_flight.forget_endpoint(a)
            self._unready.discard(a)
        if self.settings.eds_path is not None:
            write_eds_file(self.settings.eds_path, CLUSTER_NAME, addresses)
            self.envoy.published(addresses, added)

    def on_scrape(self, address: str, ok: bool) -> None:
        """After each scrape: an endpoint that became ready (again) gets its served models polled at once
        (a restarted vLLM has lost its runtime adapters); one may have made the first endpoint ready
        for held requests."""
        ep = self.datastore.get(address)
        if ep is not None:
            if not ep.ready:
                self._unready.add(address)
            elif address in self._unready:
                self._unready.discard(address)
                if self.models_poller is not None:
                    self.models_poller.poke(address)
        if ok and self.hold is not None and len(self.hold):
            self.release_held()

    def release_held(self) -> None:
        """Route the held requests, oldest first, if an endpoint is routable now."""
        if self.hold is None or not len(self.hold):
            return
        ready = self._routable()
        if ready:
            now = time.monotonic()
            self.hold.release(lambda h: self._route(h.req, h.phase, h.body, h.request_id, ready, now))

    def _routable(self) -> list[Endpoint]:
        """Ready endpoints Envoy can route to (it may not have loaded a new one from the EDS file yet)."""
        ready = self.datastore.ready()
        pending = self.envoy.pending
        return [e for e in ready if e.address not in pending] if pending else ready

    def health(self, raw: bytes = b"", stream: StreamContext | None = None) -> bytes:
        """grpc.health.v1 Check: SERVING while the pool can take requests: some endpoint is ready, or
        requests are held until one is."""
        return _HEALTH_SERVING if self.hold is not None or self.datastore.ready() else _HEALTH_NOT_SERVING

    def _routed(self, destination: str, phase: str) -> bytes:
        key = (destination, phase)
        out = self._cache.get(key)
        if out is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            out = self._cache[key] = _route_response(destination, phase)
        return out

    def handle(self, raw: bytes, stream: StreamContext | None = None) -> bytes:
        """One ext_proc message -> its answer; ``stream`` carries the request's state between its
        messages and is told to finish once the request is decided."""
        t0 = time.perf_counter()
        msg = pb.ProcessingRequest.FromString(raw)
        which = msg.WhichOneof("request")
        if which == "request_body":
            request_id, objective = cast(tuple[str, str], stream.data) if stream is not None and stream.data else ("", "")
            try:
                req = parse_body(msg.request_body.body)
            except BadRequest as exc:
                self.metrics.count("", "", "", "bad_request")
                out = _error_response(400, str(exc), "invalid_request_error")
            else:
                out = self._decide(req, "body", msg.request_body.body, request_id, objective, stream)
        elif which == "request_headers":
            request_id = objective = path = method = ""
            body_less = msg.request_headers.end_of_stream
            for h in msg.request_headers.headers.headers:
                if h.key == "x-request-id":
                    request_id = (h.raw_value or h.value.encode()).decode("latin-1")
                elif h.key == OBJECTIVE_HEADER:
                    objective = (h.raw_value or h.value.encode()).decode("latin-1")
                elif body_less and h.key == ":path":
                    path = (h.raw_value or h.value.encode()).decode("latin-1")
                elif body_less and h.key == ":method":
                    method = (h.raw_value or h.value.encode()).decode("latin-1")
            if not body_less:  # the body follows: route on it
                if stream is not None:
                    stream.data = (request_id, objective)
                return _CONTINUE_HEADERS
            if path.split("?", 1)[0] == "/v1/models" and method not in ("GET", "HEAD", ""):
                out = _MODELS_METHOD_NOT_ALLOWED
            elif path.split("?", 1)[0] != "/v1/models" or not self.datastore.ready():
                out = self._decide_body_less(request_id, objective, stream)
            elif stream is not None and self.models_poller is not None:  # answered once the lists are polled
                stream.later = self._models_list_after_refresh(time.monotonic(), request_id, objective)
                out = self._hold_timer
            else:
                out = self._models_list() or self._decide_body_less(request_id, objective, stream)
        else:  # a phase we did not ask for: let it continue unchanged
            out = pb.ProcessingResponse(**{which: {}}).SerializeToString() if which else b""
        if stream is not None and which in ("request_body", "request_headers"):
            stream.finish = True  # decided: Envoy needs the EPP no more for this request
        self._latency.observe(time.perf_counter() - t0)
        return out

    def access_log(self, raw: bytes, stream: StreamContext | None = None) -> None:
        """Envoy's gRPC access log: each HTTP entry ends its request's in-flight count."""
        msg = als_pb2.StreamAccessLogsMessage.FromString(raw)
        for entry in msg.http_logs.log_entry:
            self.in_flight.complete(entry.request.request_id)
        return None

    def _decide(self, req: InferenceRequest, phase: str, body: bytes, request_id: str = "",
                objective: str = "", stream: StreamContext | None = None) -> bytes:
        now = time.monotonic()
        model = req.model
        target = self.rewrites.apply(model) if model else model
        req.target_model = target
        req.priority = self.objectives.priority(model, target, objective) if model or objective else 0
        if self.hold is not None and stream is not None:
            ready = self._routable()
            if not ready or len(self.hold):  # held requests go first
                return self._hold_request(req, phase, body, request_id, stream)
        else:
            ready = self.datastore.ready()
            if not ready:
                self.metrics.count(model, target, "", "unavailable")
                return self._errors[503]
        return self._route(req, phase, body, request_id, ready, now, stream)

    def _hold_request(self, req: InferenceRequest, phase: str, body: bytes, request_id: str,
                      stream: StreamContext) -> bytes:
        assert self.hold is not None
        # keep the body (up to 16 MiB) only if routing will rewrite it
        answer = self.hold.add(req, phase, body if req.target_model != req.model else b"", request_id)
        if answer is None:
            self.metrics.count(req.model, req.target_model, "", "unavailable")
            return self._hold_full
        stream.later = answer  # the decision (or 503) follows on this stream
        return self._hold_timer  # meanwhile Envoy's timer must outlast the hold

    def _hold_timed_out(self, held: Held) -> bytes:
        assert self.hold is not None
        req = held.req
        self.metrics.count(req.model, req.target_model, "", "unavailable")
        known = self.datastore.all()
        ready = sum(e.ready for e in known)
        loading = f" (Envoy has not loaded {len(self.envoy.pending)} of them yet)" if self.envoy.pending else ""
        return _error_response(
            503, f"no model server became ready within {self.hold.settings.timeout_s:g} s (scale-from-zero hold); "
            f"the pool has {len(known)} endpoints, {ready} ready{loading}; retry later", "service_unavailable")

    def _route(self, req: InferenceRequest, phase: str, body: bytes, request_id: str, ready: list[Endpoint],
               now: float, stream: StreamContext | None = None) -> bytes:
        """``stream`` (the request's own, not a held request's release) allows one recheck of the
        served models before a 404."""
        model, target = req.model, req.target_model
        if target:  # only endpoints serving the (rewritten) model; ``ready`` itself when all do
            able = serving(target, ready)
            if not able and stream is not None and self.models_poller is not None:
                stream.later = self._route_after_recheck(req, phase, body, request_id, now)
                return self._hold_timer
            ready = able
            if not ready:
                self.metrics.count(model, target, "", "unknown_model")
                return self._unknown_model(model, target)
        sat = self.settings.saturation
        if req.priority < 0 and is_saturated(ready, sat, now):
            self.metrics.shed.labels(model).inc()
            self.metrics.count(model, target, "", "shed")
            return self._errors[429]
        result = self.scheduler.schedule(SchedContext(now, self._staleness_s, sat), req, ready)
        assert result is not None  # ready is not empty
        self.in_flight.start(request_id, result.endpoint, req.prompt_tokens, now)
        destination = result.endpoint.address
        if result.fallbacks:
            destination = ",".join([destination, *(e.address for e in result.fallbacks)])
        self.metrics.count(model, target, result.endpoint.address, "routed")
        if target != model and phase == "body":
            return _route_response(destination, phase, self._rewrite_body(body, target))
        return self._routed(destination, phase)

    async def _route_after_recheck(self, req: InferenceRequest, phase: str, body: bytes, request_id: str,
                                   arrived: float) -> bytes:
        """The 404 path: poll the ready endpoints' /v1/models (a recheck started after this request
        arrived, shared with other requests), then decide again, without another recheck."""
        await self._refresh_models(arrived)
        ready = self._routable() if self.hold is not None else self.datastore.ready()
        if not ready:
            self.metrics.count(req.model, req.target_model, "", "unavailable")
            return self._errors[503]
        return self._route(req, phase, body, request_id, ready, time.monotonic())

    async def _refresh_models(self, since: float) -> None:
        """Wait, at most ``_MODELS_RECHECK_WAIT_S``, for a served-models recheck that started at or
        after ``since``: at most one runs and the requests arriving meanwhile share the next one, so
        a flood of unknown names costs one poll per endpoint per recheck, not one per request. After
        the wait the caller decides on what is known: Envoy's message timer must not fire first."""
        try:
            await asyncio.wait_for(self._recheck_started_since(since), _MODELS_RECHECK_WAIT_S)
        except asyncio.TimeoutError:
            pass

    async def _recheck_started_since(self, since: float) -> None:
        assert self.models_poller is not None
        while True:
            task, started = self._models_refresh, self._models_refresh_at
            if task is None or task.done():
                self._models_refresh_at = started = time.monotonic()
                addresses = [e.address for e in self.datastore.ready()]
                task = self._models_refresh = asyncio.ensure_future(
                    self.models_poller.refresh(addresses, _MODELS_RECHECK_MAX_S))
            await asyncio.shield(task)  # one request's cancellation must not cancel the others' recheck
            if started >= since:
                return

    async def _models_list_after_refresh(self, arrived: float, request_id: str, objective: str) -> bytes:
        """``GET /v1/models``: the union of lists polled after the request arrived (shared with the
        404 path's rechecks), so an adapter loaded a moment ago is listed; routed to a replica as
        before if a list is still unknown."""
        await self._refresh_models(arrived)
        return self._models_list() or self._decide_body_less(request_id, objective)

    def _decide_body_less(self, request_id: str, objective: str, stream: StreamContext | None = None) -> bytes:
        """A request without a body (a GET): routed on its headers alone, no model to match."""
        req = InferenceRequest(model="", prompt="", stream=False, max_tokens=None, kind="other")
        return self._decide(req, "headers", b"", request_id, objective, stream)

    def _models_list(self) -> bytes | None:
        """``GET /v1/models`` answered by the EPP: the union of the ready endpoints' lists (an
        adapter loaded on one replica only is listed too), base models first; None (the request
        goes to a replica as any other) while an endpoint's list is not known (always, with
        ``models_poll`` off) or none is ready."""
        ready = sorted(self.datastore.ready(), key=lambda e: e.address)
        if not ready or any(e.served_models is None for e in ready):
            return None
        bases: dict[str, dict[str, object]] = {}
        adapters: dict[str, dict[str, object]] = {}
        for ep in ready:
            for entry in ep.model_entries:
                mid = entry["id"]
                (adapters if mid in ep.served_adapters else bases).setdefault(mid, entry)
        self.metrics.count("", "", "", "models_list")
        body = json.dumps({"object": "list", "data": [*bases.values(), *adapters.values()]}).encode()
        return _immediate_json(200, body, "models_list")

    def _unknown_model(self, model: str, target: str) -> bytes:
        """404: every ready endpoint's model list is known and none has ``target`` (a rare path)."""
        served = sorted(set().union(*(e.served_models for e in self.datastore.ready() if e.served_models)))
        listed = ", ".join(served[:_MAX_LISTED_MODELS]) or "(none)"
        if len(served) > _MAX_LISTED_MODELS:
            listed += f", ... ({len(served) - _MAX_LISTED_MODELS} more)"

        def shown(name: str) -> str:
            return name if len(name) <= _MAX_ECHOED_NAME else name[:_MAX_ECHOED_NAME] + "..."

        what = f"`{shown(target)}`" if target == model else f"`{shown(target)}` (rewritten from `{shown(model)}`)"
        return _error_response(404, f"The model {what} does not exist on any model server; served: {listed}",
                               "NotFoundError", param="model")

    @staticmethod
    def _rewrite_body(body: bytes, target: str) -> bytes:
        # only for rewritten models (rare): re-parse so every other field stays untouched
        data = json.loads(body)
        data["model"] = target
        return json.dumps(data, separators=(",", ":")).encode()


async def _start_grpcio(picker: EndpointPicker, host: str, port: int) -> grpc.aio.Server:
    async def process(request_iterator, context):  # type: ignore[no-untyped-def]
        stream = StreamContext(0)
        async for raw in request_iterator:
            yield picker.handle(raw, stream)
            if stream.later is not None:  # held: the decision follows (cancelled with the RPC)
                later, stream.later = stream.later, None
                yield await later
            if stream.finish:
                return

    async def access_logs(request_iterator, context):  # type: ignore[no-untyped-def]
        async for raw in request_iterator:
            picker.access_log(raw)
        return b""

    async def health(raw: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
        return picker.health(raw)

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler(_EXT_PROC_SERVICE, {
            "Process": grpc.stream_stream_rpc_method_handler(process)}),
        grpc.method_handlers_generic_handler(_ACCESS_LOG_SERVICE, {
            "StreamAccessLogs": grpc.stream_unary_rpc_method_handler(access_logs)}),
        grpc.method_handlers_generic_handler(_HEALTH_SERVICE, {
            "Check": grpc.unary_unary_rpc_method_handler(health)}),
    ])
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind the EPP gRPC port {host}:{port}")
    await server.start()
    return server


async def _expire_in_flight(picker: EndpointPicker) -> None:
    while True:
        await asyncio.sleep(5.0)
        if picker.in_flight.expire():
            log.warning("in-flight entries expired without an end report (now %d open)", len(picker.in_flight))


async def serve(settings: EppSettings, stop: asyncio.Event) -> None:
    """Run the EPP until ``stop`` is set: gRPC server, discovery, scraper, metrics endpoint."""
    from prometheus_client import start_http_server

    picker = EndpointPicker(settings)
    scraper = Scraper(picker.datastore, settings.scrape_interval_ms / 1000.0, settings.scrape_timeout_ms / 1000.0,
                      on_scrape=picker.on_scrape, observer=picker.metrics)
    poller = None
    if settings.models_poll:
        poller = picker.models_poller = ModelsPoller(
            picker.datastore, settings.models_interval_ms / 1000.0, settings.models_timeout_ms / 1000.0,
            observer=picker.metrics)

    def on_change(addresses: list[str]) -> None:
        picker.on_endpoints(addresses)
        scraper.sync()
        if poller is not None:
            poller.sync()

    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if settings.server == "h2":
        server = GrpcH2Server({f"/{_EXT_PROC_SERVICE}/Process": picker.handle,
                               f"/{_ACCESS_LOG_SERVICE}/StreamAccessLogs": picker.access_log,
                               f"/{_HEALTH_SERVICE}/Check": picker.health})
        await server.start(settings.grpc_host, settings.grpc_port)
        picker.metrics.grpc_buffered.set_function(server.buffered_bytes)
        stop_server: Callable[[], Awaitable[None]] = server.stop
    else:
        grpc_server = await _start_grpcio(picker, settings.grpc_host, settings.grpc_port)

        async def stop_grpcio() -> None:
            await grpc_server.stop(grace=1.0)
        stop_server = stop_grpcio

    httpd, thread = start_http_server(settings.metrics_port, addr=settings.grpc_host, registry=picker.metrics.registry)
    tasks = [asyncio.create_task(make_discovery(settings.discovery).run(on_change), name="discovery"),
             asyncio.create_task(_expire_in_flight(picker), name="in-flight expiry")]
    log.info("EPP pid %d serving ext_proc on %s, metrics on :%d", os.getpid(), address, settings.metrics_port)
    try:
        await stop.wait()
    finally:
        log.info("EPP pid %d stopping", os.getpid())
        await stop_server()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await scraper.stop()
        if poller is not None:
            await poller.stop()
        await picker.envoy.stop()
        httpd.shutdown()
        thread.join(timeout=2)


def run_epp(settings: EppSettings) -> int:
    """Blocking entry point of ``inferstack epp``: runs until SIGTERM/SIGINT."""

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per scrape would flood the log

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
    return 0
