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
Invariants: the admin interface binds 127.0.0.1 only; the picker processes no response phase.
"""

from __future__ import annotations

from pathlib import Path

from inferstack.gateway.settings import GatewaySettings
from inferstack.wire import (DESTINATION_HEADER, ENVOY_LB_NAMESPACE, ENVOY_STAT_PREFIX, RESPONSE_HEADERS_NAMESPACE,
                             USAGE_NAMESPACE)

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
        "access_log": [{"name": "envoy.access_loggers.http_grpc", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {"log_name": "inferstack-completions", "transport_api_version": "V3",
                              "grpc_service": {"envoy_grpc": {"cluster_name": _EPP_CLUSTER}},
                              "buffer_size_bytes": 16384, "buffer_flush_interval": "0.010s"}}}],
        "route_config": {"name": "inference", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [
                *_batch_routes(settings),  # before the catch-all: files/batches skip the picker
                {"name": "all", "match": {"prefix": "/"}, "route": route_action},
            ]}]},
        "http_filters": [
            {"name": "envoy.filters.http.ext_proc", "typed_config": {
                "@type": _EXT_PROC_TYPE,
                "grpc_service": {"envoy_grpc": {"cluster_name": _EPP_CLUSTER},
                                 "timeout": _duration(max(1.0, settings.ext_proc_timeout_ms / 1000.0))},
                # closed: a dead EPP gives new requests a 503 (JSON body from the local reply
                # mapper below); open: Envoy routes them itself (override_host's fallback policy)
                "failure_mode_allow": settings.epp_failure_mode == "open",
                "status_on_error": {"code": 503},
                "message_timeout": _duration(settings.ext_proc_timeout_ms / 1000.0),
                "processing_mode": {
                    "request_header_mode": "SEND", "response_header_mode": "SKIP",
                    "request_body_mode": "BUFFERED", "response_body_mode": "NONE",
                    "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"},
                "mutation_rules": {"allow_all_routing": True},
                # Envoy drops an ext_proc server's dynamic metadata unless its namespace is listed
                "metadata_options": {"receiving_namespaces": {"untyped": [RESPONSE_HEADERS_NAMESPACE]}},
                "send_body_without_waiting_for_header_response": True,
                **_hold_timer(settings),
            }},
            {"name": _LUA_FILTER, "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": _RESPONSE_LUA}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
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
    epp_cluster = {
        "name": _EPP_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": _EPP_CLUSTER, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": epp.grpc_host, "port_value": epp.grpc_port}}}}]}]},
    }
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
            "clusters": [pool, epp_cluster, *_batch_clusters(settings)],
        },
    }


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
