"""The endpoint picker: an Envoy ext_proc gRPC server speaking the Gateway API Inference Extension
endpoint-picker protocol.

Parts: ``EndpointPicker`` is the transport edge (decode with ``codec``, ask the ``Director`` for a
typed ``Decision``: ``Route | Reject | Respond | Defer``, encode it once); the director owns the
steps objective -> admission -> candidates -> schedule (``gateway/director.py``); a request's
headers leave a ``RequestContext`` for its body (``gateway/decision.py``).

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
which closes the request's in-flight entry (``InFlightLedger``). With ``peers`` (several pickers
behind one Envoy) the router's upstream log also reports each routed request's start with the
routing picker's note (``RouteNote``): every picker counts every request, whichever routed it.
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
from pathlib import Path

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from inferstack.gateway.codec import CONTINUE_HEADERS, Codec, read_headers, read_peer_routed, read_usage
from inferstack.gateway.datastore import Datastore
from inferstack.gateway.decision import Decision, Defer, Reject, RequestContext
from inferstack.gateway.director import Director
from inferstack.gateway.discovery import make_discovery
from inferstack.gateway.envoy_config import CLUSTER_NAME
from inferstack.gateway.h2grpc import GrpcH2Server, StreamContext
from inferstack.gateway.hold import EnvoyLoadWatch
from inferstack.gateway.kv_events import KvEventSubscriber
from inferstack.gateway.request import BadRequest, parse_body
from inferstack.gateway.scraper import Scraper
from inferstack.gateway.served_models import ModelsPoller
from inferstack.gateway.settings import EppSettings
from inferstack.wire import DESTINATION_HEADER, OBJECTIVE_HEADER

__all__ = ["DESTINATION_HEADER", "OBJECTIVE_HEADER", "EndpointPicker", "run_epp", "serve", "write_eds_file"]

log = logging.getLogger(__name__)

_EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
_ACCESS_LOG_SERVICE = "envoy.service.accesslog.v3.AccessLogService"
_ROUTED = accesslog_pb2.AccessLogType.UpstreamPoolReady  # the router's upstream log (several pickers)
_ENDED = (accesslog_pb2.AccessLogType.DownstreamEnd, accesslog_pb2.AccessLogType.NotSet)  # the HCM's
_HEALTH_SERVICE = "grpc.health.v1.Health"
_HEALTH_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}
_HEALTH_NOT_SERVING = b"\x08\x02"


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
    """The transport edge of the picker, independent of gRPC: raw ProcessingRequest bytes -> raw
    answer bytes. It decodes each message (``codec``), asks the ``Director`` for a typed decision
    and encodes it once; a ``Defer`` becomes the stream's later answer."""

    def __init__(self, settings: EppSettings, datastore: Datastore | None = None) -> None:
        self.settings = settings
        self.director = Director(settings, datastore or Datastore(
            reset_in_flight_on_scrape=settings.completion == "scrape"))
        self.codec = Codec(settings.wait_timer_s())
        d = self.director
        # the director's parts, for the transport's wiring (scraper, poller, metrics endpoint) and tests
        self.datastore, self.scheduler, self.metrics, self.in_flight = d.datastore, d.scheduler, d.metrics, d.in_flight
        self.rewrites, self.waiting = d.rewrites, d.waiting
        self._latency = self.metrics.latency
        self._unready: set[str] = set()  # endpoints not ready at their last scrape (or never scraped)
        self.kv_events: KvEventSubscriber | None = None  # set by serve() with kv_events on

    @property
    def envoy(self) -> EnvoyLoadWatch:
        return self.director.envoy

    @envoy.setter
    def envoy(self, watch: EnvoyLoadWatch) -> None:
        self.director.envoy = watch

    @property
    def models_poller(self) -> ModelsPoller | None:
        return self.director.models_poller

    @models_poller.setter
    def models_poller(self, poller: ModelsPoller | None) -> None:
        self.director.models_poller = poller

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
        if self.kv_events is not None:
            self.kv_events.set_endpoints(addresses)

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
                if self.kv_events is not None:  # a new vLLM process: its cache starts empty
                    self.kv_events.restarted(address)
        if ok and self.waiting is not None and len(self.waiting):
            self.director.release_waiting()

    def health(self, raw: bytes = b"", stream: StreamContext | None = None) -> bytes:
        """grpc.health.v1 Check: SERVING while the pool can take requests: some endpoint is ready, or
        requests are held until one is."""
        return _HEALTH_SERVING if self.director.hold_enabled or self.datastore.ready() else _HEALTH_NOT_SERVING

    def handle(self, raw: bytes, stream: StreamContext | None = None) -> bytes:
        """One ext_proc message -> its answer; ``stream`` carries the request's context between its
        messages and is told to finish once the request is decided."""
        t0 = time.perf_counter()
        m = self.metrics
        msg = pb.ProcessingRequest.FromString(raw)
        which = msg.WhichOneof("request")
        decision: Decision
        if which == "request_body":
            ctx = stream.data if stream is not None and isinstance(stream.data, RequestContext) else RequestContext()
            try:
                req = parse_body(msg.request_body.body)
            except BadRequest as exc:
                self.metrics.count("", "", "", "bad_request")
                decision = Reject(400, str(exc), "invalid_request_error")
                t1 = time.perf_counter()
                m.phase_parse.observe(t1 - t0)
            else:
                t1 = time.perf_counter()
                m.phase_parse.observe(t1 - t0)
                decision = self.director.decide(req, ctx, "body", msg.request_body.body, stream is not None)
                m.phase_decide.observe(time.perf_counter() - t1)
        elif which == "request_headers":
            ctx = read_headers(msg.request_headers, time.monotonic())
            refused = self.director.authenticate(ctx)
            if refused is not None:  # before the body is read
                decision = refused
            elif not msg.request_headers.end_of_stream:  # the body follows: decided on it
                if stream is not None:
                    stream.data = ctx
                m.phase_headers.observe(time.perf_counter() - t0)
                return CONTINUE_HEADERS
            else:
                t1 = time.perf_counter()
                m.phase_headers.observe(t1 - t0)
                decision = self.director.decide_body_less(ctx, stream is not None)
                m.phase_decide.observe(time.perf_counter() - t1)
        else:  # a phase we did not ask for: let it continue unchanged
            return pb.ProcessingResponse(**{which: {}}).SerializeToString() if which else b""
        t2 = time.perf_counter()
        if isinstance(decision, Defer):
            assert stream is not None  # the director defers only when the stream can answer later
            stream.later = self._encoded(decision.later)
            out = self.codec.hold_timer  # meanwhile Envoy's message timer must outlast the wait
        else:
            out = self.codec.encode(decision)
        if stream is not None:
            stream.finish = True  # decided: Envoy needs the EPP no more for this request
        t3 = time.perf_counter()
        m.phase_encode.observe(t3 - t2)
        self._latency.observe(t3 - t0)
        return out

    def _encoded(self, later: Awaitable[Decision]) -> asyncio.Future[bytes]:
        """The encoded answer of a deferred decision, as a future the transport awaits; cancelling it
        (the client left) cancels the wait itself (a held request leaves the hold queue)."""
        inner = asyncio.ensure_future(later)
        outer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def decided(f: asyncio.Future[Decision]) -> None:
            if outer.done():
                return
            if f.cancelled():
                outer.cancel()
            elif (exc := f.exception()) is not None:
                outer.set_exception(exc)
            else:
                try:
                    outer.set_result(self.codec.encode(f.result()))
                except Exception as err:  # an encoding bug fails this request only (INTERNAL)
                    outer.set_exception(err)

        inner.add_done_callback(decided)
        outer.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        return outer

    def access_log(self, raw: bytes, stream: StreamContext | None = None) -> None:
        """Envoy's gRPC access log: each HTTP entry ends its request's in-flight count and settles
        its tokens (quota, fair queuing) to what the response used."""
        msg = als_pb2.StreamAccessLogsMessage.FromString(raw)
        now = time.monotonic()
        for entry in msg.http_logs.log_entry:
            kind = entry.common_properties.access_log_type
            if kind == _ROUTED:  # with several pickers: a request one of them routed has started
                routed = read_peer_routed(entry)
                if routed is not None:
                    self.director.peer_routed(routed, now)
            elif kind in _ENDED:
                self.director.settle_usage(entry.request.request_id, read_usage(entry))
        if self.waiting is not None and len(self.waiting):  # an end makes room
            self.director.release_waiting()
        return None


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

    if picker.director.kv_index is not None:
        kv = settings.kv_events
        picker.kv_events = KvEventSubscriber(picker.director.kv_index, kv.publisher, kv.replayer,
                                             on_batch=picker.metrics.kv_batch, on_gap=picker.metrics.kv_gap)
        picker.metrics.watch_kv_index(picker.director.kv_index)
        picker.kv_events.start()
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
        if picker.kv_events is not None:
            picker.kv_events.stop()
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
