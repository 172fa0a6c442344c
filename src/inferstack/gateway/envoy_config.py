"""Generate Envoy's bootstrap config for the gateway (a plain dict, written as YAML).

Shape: one listener (HTTP/1.1 and h2c from clients) -> HTTP connection manager -> ext_proc filter
(our EPP over gRPC) -> router -> cluster ``inference_pool``. The pool's members come from an EDS
file the EPP mirrors from discovery; its load-balancing policy is ``override_host``, which sends
the request to the first host of ``x-gateway-destination-endpoint`` (metadata ``envoy.lb`` first,
then the header) and, on a retry (connect failure, refused stream, reset or 5xx before any byte
was sent downstream), to the next one: the fallbacks the EPP listed; without a header (the EPP
down and ``epp_failure_mode: open``) to the host with the fewest active requests.
The EPP ends each ext_proc stream once it has decided, so no response depends on it; a gRPC
access log to the EPP reports each response's end (its in-flight counts); with the EPP down and
failing closed, a local reply mapper gives the 503 a JSON body. With ``hold`` enabled the filter's
``max_message_timeout`` lets the EPP extend its per-message timer while it holds a request (scale
from zero); the route timeout starts only once the router has the request, after the hold.
With ``batch_port`` set, ``/v1/files`` and ``/v1/batches`` go to the batch service (static cluster
``batch`` on 127.0.0.1) with ext_proc disabled on those routes: the picker never sees them.
A Lua filter after the picker reads each inference response on its way out without holding it back
(``_RESPONSE_LUA``): it adds the headers the picker asked for (dynamic metadata
``inferstack.response_headers``: a tenant's ``x-ratelimit-*``) and records the response's tokens
(``inferstack.usage``: vLLM's ``usage``, its cached prompt tokens included, from the JSON body or
a stream's usage event; else the stream's text events counted), which the access log brings to
the picker.
With ``pickers`` > 1 the ext_proc cluster holds every picker, health-checked, and a stream that
cannot reach one is retried on another; a request whose picker died while deciding it goes round
the listener once more (``_second_pass_routes``); each picker has a cluster of its own for Envoy's logs, so
every picker gets every end report and, from the router's upstream log, every routed start.
Invariants: the admin interface binds 127.0.0.1 only; the picker processes no response phase.
"""

from __future__ import annotations

from pathlib import Path

from inferstack.gateway.settings import GatewaySettings
from inferstack.wire import (DESTINATION_HEADER, ENVOY_LB_NAMESPACE, ENVOY_STAT_PREFIX, RESPONSE_HEADERS_NAMESPACE,
                             ROUTE_NOTE_HEADER, USAGE_NAMESPACE)

SECOND_PASS_HEADER = "x-inferstack-second-pass"  # a request going round again (several pickers)

__all__ = ["BATCH_CLUSTER", "CLUSTER_NAME", "build_envoy_config"]

CLUSTER_NAME = "inference_pool"
_EPP_CLUSTER = "epp"
_EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
_BUFFER_LIMIT = 16 * 1024 * 1024  # the whole request body is buffered for the EPP


# While the EPP is unreachable (fail closed) Envoy answers 503 with an empty body; give it the
# OpenAI-style JSON error our EPP itself uses, so clients see why.
_EPP_DOWN_BODY = ('{"error": {"message": "the endpoint picker (EPP) is unavailable or did not answer in time; '
                  'the gateway cannot route new requests until it is back (it is restarted automatically)", '
                  '"type": "service_unavailable", "code": %RESPONSE_CODE%}}')
_EPP_DOWN_REPLY = {
    "filter": {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                         "expression": "response.code_details.startsWith('ext_proc_error')"}}},
    "body_format_override": {"text_format_source": {"inline_string": _EPP_DOWN_BODY},
                             "content_type": "application/json"},
}


# Envoy's Lua filter on inference responses: nothing is held back or buffered (bodyChunks hands
# over each chunk as it passes). A stream is read event by event: an event with text counts one
# completion token (vLLM sends one event per engine step: exact without speculative decoding, a
# lower bound with it) until a usage event (stream_options.include_usage) gives vLLM's own. Of a
# JSON answer only the last 64 KiB are kept, where vLLM writes `usage` (after `choices`).
_RESPONSE_LUA = """
-- vLLM's usage in a piece of JSON: prompt, completion and cached prompt tokens (nil when absent)
local function usage_in(text)
  local p = string.match(text, '"prompt_tokens":%%s*(%%d+)')
  local c = string.match(text, '"completion_tokens":%%s*(%%d+)')
  if not (p and c) then return nil end
  return tonumber(p), tonumber(c), tonumber(string.match(text, '"cached_tokens":%%s*(%%d+)'))
end

function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata()
  local extra = meta:get("%(headers_ns)s")
  local headers = handle:headers()
  if extra then
    for name, value in pairs(extra) do headers:replace(name, value) end
  end
  if headers:get(":status") ~= "200" then return end
  local ctype = headers:get("content-type") or ""
  local stream = string.find(ctype, "text/event-stream", 1, true) ~= nil
  if not stream and not string.find(ctype, "json", 1, true) then return end
  local prompt, completion, cached, events, pending = nil, nil, nil, 0, ""
  for chunk in handle:bodyChunks() do
    pending = pending .. chunk:getBytes(0, chunk:length())
    if stream then
      while true do
        local s, e = string.find(pending, "\\n\\n", 1, true)
        if not s then break end
        local event = string.sub(pending, 1, s - 1)
        pending = string.sub(pending, e + 1)
        if string.find(event, '"content":%%s*"[^"]') or string.find(event, '"text":%%s*"[^"]') then
          events = events + 1
        end
        local p, c, k = usage_in(event)
        if p then prompt, completion, cached = p, c, k end
      end
      if #pending > 1048576 then pending = "" end
    elseif #pending > 65536 then
      pending = string.sub(pending, -65536)
    end
  end
  if not stream then prompt, completion, cached = usage_in(pending) end
  meta = handle:streamInfo():dynamicMetadata()  -- objects taken before the body was read are stale now
  if completion then
    meta:set("%(usage_ns)s", "prompt_tokens", prompt)
    meta:set("%(usage_ns)s", "completion_tokens", completion)
    meta:set("%(usage_ns)s", "reported", true)
    if cached then meta:set("%(usage_ns)s", "cached_tokens", cached) end
  elseif events > 0 then
    meta:set("%(usage_ns)s", "completion_tokens", events)
    meta:set("%(usage_ns)s", "reported", false)
  end
end
""" % {"headers_ns": RESPONSE_HEADERS_NAMESPACE, "usage_ns": USAGE_NAMESPACE}
_LUA_FILTER = "envoy.filters.http.lua"


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _hold_timer(settings: GatewaySettings) -> dict:
    # A waiting request is answered late: the EPP first sends only override_message_timeout, which
    # Envoy honours (once per message) up to max_message_timeout; 0 (unset) disables overrides.
    timer = settings.wait_timer_s()
    return {} if timer is None else {"max_message_timeout": _duration(timer)}


def build_envoy_config(settings: GatewaySettings, eds_path: Path) -> dict:
    epp = settings.epp
    retry_policy = {
        "retry_on": "connect-failure,refused-stream,reset-before-request,reset,5xx",
        "num_retries": settings.retries,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                  "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host."
                                                   "previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": 3,
    }
    route_action = {"cluster": CLUSTER_NAME, "timeout": _duration(settings.request_timeout_s),
                    "retry_policy": retry_policy}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": ENVOY_STAT_PREFIX,
        "codec_type": "AUTO",
        "stream_idle_timeout": _duration(settings.stream_idle_timeout_s),
        "request_timeout": "0s",
        "local_reply_config": {"mappers": [_EPP_DOWN_REPLY]},
        # Each response's end, reported to the EPP within 10 ms (batched: one gRPC message per
        # flush, not per request): its in-flight counts. Losing the EPP loses only these reports.
        # With several pickers each gets every report (one logger per picker's own cluster).
        "access_log": [_grpc_log(cluster, "inferstack-completions") for cluster in _log_clusters(settings)],
        "route_config": {"name": "inference", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [
                *_batch_routes(settings),  # before the catch-all: files/batches skip the picker
                *(_second_pass_routes(settings, route_action) if _second_pass(settings) else
                  [{"name": "all", "match": {"prefix": "/"}, "route": route_action}]),
            ]}]},
        "http_filters": [
            {"name": "envoy.filters.http.ext_proc", "typed_config": {
                "@type": _EXT_PROC_TYPE,
                "grpc_service": {"envoy_grpc": {"cluster_name": _EPP_CLUSTER},
                                 "timeout": _duration(max(1.0, settings.ext_proc_timeout_ms / 1000.0)),
                                 **_to_another_picker(settings)},
                # closed: a dead EPP gives new requests a 503 (JSON body from the local reply
                # mapper below); open: Envoy routes them itself (override_host's fallback policy)
                # with several pickers, failing closed: a request whose picker died goes round again
                "failure_mode_allow": settings.epp_failure_mode == "open" or _second_pass(settings),
                # ... which the routes tell by the picker's metadata: match them again after its answer
                **({"route_cache_action": "CLEAR"} if _second_pass(settings) else {}),
                "status_on_error": {"code": 503},
                "message_timeout": _duration(settings.ext_proc_timeout_ms / 1000.0),
                "processing_mode": {
                    "request_header_mode": "SEND", "response_header_mode": "SKIP",
                    "request_body_mode": "BUFFERED", "response_body_mode": "NONE",
                    "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
                "mutation_rules": {"allow_all_routing": True},
                # Envoy drops an ext_proc server's dynamic metadata unless its namespace is listed
                "metadata_options": {"receiving_namespaces": {
                    "untyped": [RESPONSE_HEADERS_NAMESPACE, ENVOY_LB_NAMESPACE]}},
                "send_body_without_waiting_for_header_response": True,
                **_hold_timer(settings),
            }},
            {"name": _LUA_FILTER, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": _RESPONSE_LUA}}},
            {"name": "envoy.filters.http.router", "typed_config": _router(settings)},
        ],
    }
    pool = {
        "name": CLUSTER_NAME,
        "type": "EDS",
        "connect_timeout": _duration(settings.connect_timeout_s),
        "eds_cluster_config": {"eds_config": {
            "path_config_source": {"path": str(eds_path), "watched_directory": {"path": str(Path(eds_path).parent)}},
            "resource_api_version": "V3"}},
        "load_balancing_policy": {"policies": [{"typed_extension_config": {
            "name": "envoy.load_balancing_policies.override_host",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
                "override_host_sources": [
                    {"metadata": {"key": ENVOY_LB_NAMESPACE, "path": [{"key": DESTINATION_HEADER}]}},
                    {"header": DESTINATION_HEADER}],
                "fallback_policy": {"policies": [{"typed_extension_config": {
                    "name": "envoy.load_balancing_policies.least_request",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies."
                                              "least_request.v3.LeastRequest"}}}]},
            }}}]},
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        # Envoy's defaults allow only 3 concurrent retries per cluster: a replica dying under
        # load needs one retry per in-flight request, so lift them (the EPP does admission).
        "circuit_breakers": {"thresholds": [{"priority": "DEFAULT", "max_connections": 100_000,
                                             "max_pending_requests": 100_000, "max_requests": 100_000,
                                             "max_retries": 100_000}]},
        "per_connection_buffer_limit_bytes": _BUFFER_LIMIT,
    }
    ports = [grpc_port for grpc_port, _ in settings.picker_ports()]
    epp_clusters = [_picker_cluster(_EPP_CLUSTER, epp.grpc_host, ports)]
    if settings.pickers > 1:
        epp_clusters[0].update(_PICKERS_HEALTH)
        epp_clusters += [_picker_cluster(f"{_EPP_CLUSTER}-{i}", epp.grpc_host, [port]) for i, port in enumerate(ports)]
    return {
        "node": {"id": "inferstack-gateway", "cluster": "inferstack"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": settings.admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": settings.listen_host, "port_value": settings.port}},
                "per_connection_buffer_limit_bytes": _BUFFER_LIMIT,
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}],
            }],
            "clusters": [pool, *epp_clusters, *_batch_clusters(settings), *_second_pass_clusters(settings)],
        },
    }


def _picker_cluster(name: str, host: str, ports: list[int]) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}} for port in ports]}]},
    }


# Several pickers (active-active): Envoy spreads ext_proc streams over them (round robin) and moves
# off a dead one three ways: a stream that cannot connect is retried on another picker at once
# (_to_another_picker), a picker that failed a connection is ejected for a second (outlier
# detection on local-origin errors), and gRPC health checks every 0.5 s take it out until it
# answers again. A picker answering NOT_SERVING (no ready replica) fails its check too; with all
# of them failing Envoy's panic mode uses them all (each then answers 503 itself).
_PICKERS_HEALTH = {
    "health_checks": [{"timeout": "0.25s", "interval": "0.5s", "unhealthy_threshold": 1, "healthy_threshold": 1,
                       "no_traffic_interval": "0.5s", "grpc_health_check": {}}],
    "outlier_detection": {"split_external_local_origin_errors": True, "consecutive_local_origin_failure": 1,
                          "interval": "0.5s", "base_ejection_time": "1s", "max_ejection_percent": 100},
}


def _to_another_picker(settings: GatewaySettings) -> dict:
    if settings.pickers == 1:
        return {}
    return {"retry_policy": {
        "retry_on": "connect-failure,refused-stream,reset,unavailable",
        "num_retries": settings.pickers,
        "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"},
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
        "host_selection_retry_max_attempts": 3}}


def _second_pass(settings: GatewaySettings) -> bool:
    return settings.pickers > 1 and settings.epp_failure_mode == "closed"


# A picker can die while it decides a request, its ext_proc stream open; Envoy retries no open
# ext_proc stream (only the connection), so with several pickers the filter fails open and a
# request the picker did not route (no envoy.lb metadata) goes round once more: back into this
# listener, marked, where a live picker decides it (authentication included: nothing skips it).
# A marked request no picker routed gets the fail-closed 503. A client that sends the mark itself
# only loses its own second chance.
_AGAIN_CLUSTER = "gateway_again"


def _second_pass_routes(settings: GatewaySettings, route_action: dict) -> list[dict]:
    routed = [{"filter": ENVOY_LB_NAMESPACE, "path": [{"key": DESTINATION_HEADER}], "value": {"present_match": True}}]
    return [
        {"name": "all", "match": {"prefix": "/", "dynamic_metadata": routed}, "route": route_action},
        {"name": "again", "match": {"prefix": "/", "headers": [{"name": SECOND_PASS_HEADER, "present_match": True,
                                                                "invert_match": True}]},
         "route": {"cluster": _AGAIN_CLUSTER, "timeout": _duration(settings.request_timeout_s)},
         "request_headers_to_add": [{"header": {"key": SECOND_PASS_HEADER, "value": "1"},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]},
        {"name": "unrouted", "match": {"prefix": "/"},
         "direct_response": {"status": 503,
                             "body": {"inline_string": _EPP_DOWN_BODY.replace("%RESPONSE_CODE%", "503")}},
         "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"},
                                      "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]},
    ]


def _second_pass_clusters(settings: GatewaySettings) -> list[dict]:
    if not _second_pass(settings):
        return []
    host = "127.0.0.1" if settings.listen_host in ("0.0.0.0", "::", "127.0.0.1") else settings.listen_host
    return [{"name": _AGAIN_CLUSTER, "type": "STATIC", "connect_timeout": _duration(settings.connect_timeout_s),
             "per_connection_buffer_limit_bytes": _BUFFER_LIMIT,
             "load_assignment": {"cluster_name": _AGAIN_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                 "address": {"socket_address": {"address": host, "port_value": settings.port}}}}]}]}}]


def _log_clusters(settings: GatewaySettings) -> list[str]:
    """Where Envoy's logs go: the picker, or each of several pickers."""
    if settings.pickers == 1:
        return [_EPP_CLUSTER]
    return [f"{_EPP_CLUSTER}-{i}" for i in range(settings.pickers)]


def _grpc_log(cluster: str, name: str, **more: object) -> dict:
    # batched: one gRPC message per flush (10 ms), not per request
    return {"name": "envoy.access_loggers.http_grpc", **more, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
        "common_config": {"log_name": name, "transport_api_version": "V3",
                          "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
                          "buffer_size_bytes": 16384, "buffer_flush_interval": "0.010s"},
        **({"additional_request_headers_to_log": [ROUTE_NOTE_HEADER]} if name == _ROUTED_LOG else {})}}


_ROUTED_LOG = "inferstack-routed"


def _router(settings: GatewaySettings) -> dict:
    """The router; with several pickers it also reports each request's start upstream (the host
    chosen, the routing picker's note) to every picker, so each counts what the others routed."""
    router: dict = {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    if settings.pickers > 1:
        router["upstream_log_options"] = {"flush_upstream_log_on_upstream_stream": True}
        router["upstream_log"] = [
            _grpc_log(cluster, _ROUTED_LOG, filter={"log_type_filter": {"types": ["UpstreamPoolReady"]}})
            for cluster in _log_clusters(settings)]
    return router


# The batch service (OpenAI Files + Batch API) behind the same listener: a plain route with the
# ext_proc filter disabled, to a static loopback cluster. Only with ``batch_port`` set.
BATCH_CLUSTER = "batch"
_BATCH_PREFIXES = ("/v1/files", "/v1/batches")
_EXT_PROC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"


def _batch_routes(settings: GatewaySettings) -> list[dict]:
    if settings.batch_port is None:
        return []
    return [{"name": f"batch{prefix.replace('/', '-')}", "match": {"prefix": prefix},
             "route": {"cluster": BATCH_CLUSTER, "timeout": _duration(settings.request_timeout_s)},
             "typed_per_filter_config": {
                 "envoy.filters.http.ext_proc": {"@type": _EXT_PROC_PER_ROUTE, "disabled": True},
                 _LUA_FILTER: {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                               "disabled": True}}}
            for prefix in _BATCH_PREFIXES]


def _batch_clusters(settings: GatewaySettings) -> list[dict]:
    if settings.batch_port is None:
        return []
    return [{"name": BATCH_CLUSTER, "type": "STATIC", "connect_timeout": _duration(settings.connect_timeout_s),
             "load_assignment": {"cluster_name": BATCH_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
                 "address": {"socket_address": {"address": "127.0.0.1", "port_value": settings.batch_port}}}}]}]}}]
