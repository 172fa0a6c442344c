"""The ext_proc wire format of the picker: a ProcessingRequest's headers into a ``RequestContext``,
and a ``Decision`` into a ProcessingResponse, encoded once, at the transport edge; Envoy's access
log entries into what they report (a response's usage; with several pickers, a peer's routing).

Encoded answers that do not depend on the request (a route to a destination, a fixed rejection)
are cached (routes per destination; rejections in a small cache of their own, so client-made
messages such as a 400's cannot churn the routes out), so the hot path serialises nothing twice.
"""

from __future__ import annotations

import json
import math
from urllib.parse import quote, unquote

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import duration_pb2, struct_pb2

from inferstack.gateway.decision import (Decision, Defer, PeerRouted, Reject, RequestContext, Respond, Route,
                                         RouteNote)
from inferstack.gateway.inflight import Usage
from inferstack.wire import (DESTINATION_HEADER, ENVOY_LB_NAMESPACE, FAIRNESS_ID_HEADER, OBJECTIVE_HEADER,
                             RESPONSE_HEADERS_NAMESPACE, ROUTE_NOTE_HEADER, USAGE_NAMESPACE)

__all__ = ["CONTINUE_HEADERS", "Codec", "decode_note", "encode_note", "error_response",
           "immediate_json", "read_headers", "read_peer_routed", "read_usage", "route_response"]

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# headers with a body to follow: no answer yet, the decision is made on the body
CONTINUE_HEADERS = pb.ProcessingResponse(request_headers=pb.HeadersResponse()).SerializeToString()
_ROUTES_CACHED = 4096
_REJECTS_CACHED = 64


def immediate_json(code: int, body: bytes, details: str, headers: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """Envoy answers the client with ``code`` and the JSON ``body`` itself (no model server)."""
    resp = pb.ProcessingResponse(immediate_response=pb.ImmediateResponse(
        status={"code": code}, body=body, details=details,
        headers=pb.HeaderMutation(set_headers=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=key, raw_value=value), append_action=_OVERWRITE)
            for key, value in (("content-type", b"application/json"), *headers)])))
    return resp.SerializeToString()


def error_response(reject: Reject) -> bytes:
    """OpenAI's error shape: ``{"error": {"message", "type", "param"?, "code"}}``."""
    error: dict[str, object] = {"message": reject.message, "type": reject.err_type}
    if reject.param is not None:
        error["param"] = reject.param
    error["code"] = reject.code or reject.status
    return immediate_json(reject.status, json.dumps({"error": error}).encode(), reject.err_type, reject.headers)


def route_response(route: Route) -> bytes:
    headers = [base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=DESTINATION_HEADER, raw_value=route.destination.encode()),
        append_action=_OVERWRITE)]
    if route.note is not None:
        headers.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=ROUTE_NOTE_HEADER, raw_value=encode_note(route.note)),
            append_action=_OVERWRITE))
    if route.new_body is not None:
        headers.append(base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="content-length", raw_value=str(len(route.new_body)).encode()),
            append_action=_OVERWRITE))
    common = pb.CommonResponse(header_mutation=pb.HeaderMutation(set_headers=headers))
    if route.new_body is not None:
        common.body_mutation.body = route.new_body
    meta = struct_pb2.Struct()
    meta.update({ENVOY_LB_NAMESPACE: {DESTINATION_HEADER: route.destination}})
    if route.response_headers:  # the gateway's Lua filter adds them to the answer
        meta.update({RESPONSE_HEADERS_NAMESPACE: {k: v.decode("latin-1") for k, v in route.response_headers}})
    if route.phase == "body":
        resp = pb.ProcessingResponse(request_body=pb.BodyResponse(response=common), dynamic_metadata=meta)
    else:
        resp = pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common), dynamic_metadata=meta)
    return resp.SerializeToString()


def read_headers(headers: pb.HttpHeaders, now: float) -> RequestContext:
    """The request's context from its headers message (path and method only for a body-less one:
    nothing else reads them). ``tenant`` is the fairness-id header here; the auth step replaces it
    with the API key's tenant when keys are on."""
    ctx = RequestContext(arrived=now)
    body_less = headers.end_of_stream
    for h in headers.headers.headers:
        key = h.key
        if key == "x-request-id":
            ctx.request_id = (h.raw_value or h.value.encode()).decode("latin-1")
        elif key == OBJECTIVE_HEADER:
            ctx.objective = (h.raw_value or h.value.encode()).decode("latin-1")
        elif key == "authorization":
            ctx.authorization = (h.raw_value or h.value.encode()).decode("latin-1")
        elif key == FAIRNESS_ID_HEADER:
            ctx.tenant = (h.raw_value or h.value.encode()).decode("latin-1")
        elif body_less and key == ":path":
            ctx.path = (h.raw_value or h.value.encode()).decode("latin-1")
        elif body_less and key == ":method":
            ctx.method = (h.raw_value or h.value.encode()).decode("latin-1")
    return ctx


def read_usage(entry: accesslog_pb2.HTTPAccessLogEntry) -> Usage:
    """The tokens the gateway's Lua filter found in the response (``USAGE_NAMESPACE``), if any."""
    meta = entry.common_properties.metadata.filter_metadata
    if USAGE_NAMESPACE not in meta:
        return Usage()
    fields = meta[USAGE_NAMESPACE].fields

    def count(name: str) -> int | None:
        value = fields.get(name)
        if value is None or value.WhichOneof("kind") != "number_value" or value.number_value < 0:
            return None
        return int(value.number_value)

    reported = fields.get("reported")
    return Usage(count("prompt_tokens"), count("completion_tokens"),
                 reported is not None and reported.bool_value, count("cached_tokens"))


def encode_note(note: RouteNote) -> bytes:
    """``ROUTE_NOTE_HEADER``'s value: ``TENANT PROMPT QUOTA CHARGED`` (the tenant percent-encoded:
    it may come from a client's header)."""
    return f"{quote(note.tenant, safe='')} {note.prompt_tokens} {note.quota_tokens} {note.charged!r}".encode()


def decode_note(value: str) -> RouteNote | None:
    """The note in a header value; None for anything else (a client may send the header itself)."""
    parts = value.split(" ")
    if len(parts) != 4:
        return None
    try:
        prompt, quota, charged = int(parts[1]), int(parts[2]), float(parts[3])
    except ValueError:
        return None
    if prompt < 0 or quota < 0 or not (math.isfinite(charged) and charged >= 0):
        return None
    return RouteNote(unquote(parts[0]), prompt, quota, charged)


def read_peer_routed(entry: accesslog_pb2.HTTPAccessLogEntry) -> PeerRouted | None:
    """An upstream log entry (``UpstreamPoolReady``) with a picker's note, else None."""
    raw = entry.request.request_headers.get(ROUTE_NOTE_HEADER)
    sock = entry.common_properties.upstream_remote_address.socket_address
    note = decode_note(raw) if raw else None
    if note is None or not sock.address or not entry.request.request_id:
        return None
    host = f"[{sock.address}]" if ":" in sock.address else sock.address
    return PeerRouted(entry.request.request_id, f"{host}:{sock.port_value}", note)


class Codec:
    """Encodes decisions; ``hold_timer`` is the answer that extends Envoy's per-message timer while
    a deferred decision is pending."""

    def __init__(self, hold_timer_s: float) -> None:
        timer = duration_pb2.Duration()
        timer.FromMilliseconds(round(hold_timer_s * 1000))
        self.hold_timer = pb.ProcessingResponse(override_message_timeout=timer).SerializeToString()
        self._routes: dict[Route, bytes] = {}
        self._rejects: dict[Reject, bytes] = {}

    def encode(self, decision: Decision) -> bytes:
        """The ext_proc answer of a decided request (a ``Defer`` is the transport's: see EndpointPicker)."""
        if isinstance(decision, Route):
            if decision.new_body is not None or decision.response_headers or decision.note is not None:
                # these differ per request
                return route_response(decision)
            return _cached(self._routes, _ROUTES_CACHED, decision, route_response)
        if isinstance(decision, Reject):
            return _cached(self._rejects, _REJECTS_CACHED, decision, error_response)
        if isinstance(decision, Respond):
            return immediate_json(decision.status, decision.body, decision.details)
        assert not isinstance(decision, Defer), "a deferred decision is awaited, not encoded"
        raise TypeError(f"not a decision: {decision!r}")


def _cached(cache: dict, most: int, key: Route | Reject, make) -> bytes:  # type: ignore[type-arg, no-untyped-def]
    out = cache.get(key)
    if out is None:
        if len(cache) >= most:
            cache.clear()
        out = cache[key] = make(key)
    return out
