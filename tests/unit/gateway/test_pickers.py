"""Two pickers behind one Envoy (``EppSettings.peers``): what one routes, the other learns from
Envoy's upstream log (the routing picker's note in header x-inferstack-route): in-flight counts,
quota windows and fair-queuing service; ends come to both; a start reported after its end is not
counted; notes a client forged or mangled are ignored."""

from __future__ import annotations

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from inferstack.gateway.codec import decode_note, encode_note, read_peer_routed
from inferstack.gateway.decision import RouteNote
from inferstack.gateway.inflight import InFlightLedger
from inferstack.gateway.quota import Quotas
from inferstack.wire import DESTINATION_HEADER, ROUTE_NOTE_HEADER

from .conftest import make_endpoint
from .test_auth import KEY_A, _chat_as, _error, routed
from .test_epp import access_log_msg, picker


def _note_of(r) -> str:  # type: ignore[no-untyped-def]
    return next(h.header.raw_value.decode() for h in r.request_body.response.header_mutation.set_headers
                if h.header.key == ROUTE_NOTE_HEADER)


def _destination(r) -> str:  # type: ignore[no-untyped-def]
    return next(h.header.raw_value.decode() for h in r.request_body.response.header_mutation.set_headers
                if h.header.key == DESTINATION_HEADER).split(",")[0]


def upstream_log_msg(request_id: str, upstream: str, note: str | None) -> bytes:
    """The router's upstream log (UpstreamPoolReady) of a request sent to ``upstream``."""
    host, _, port = upstream.rpartition(":")
    entry = accesslog_pb2.HTTPAccessLogEntry(request=accesslog_pb2.HTTPRequestProperties(request_id=request_id))
    entry.common_properties.access_log_type = accesslog_pb2.AccessLogType.UpstreamPoolReady
    entry.common_properties.upstream_remote_address.socket_address.address = host
    entry.common_properties.upstream_remote_address.socket_address.port_value = int(port)
    if note is not None:
        entry.request.request_headers[ROUTE_NOTE_HEADER] = note
    return als_pb2.StreamAccessLogsMessage(
        http_logs=als_pb2.StreamAccessLogsMessage.HTTPAccessLogEntries(log_entry=[entry])).SerializeToString()


@pytest.mark.parametrize("tenant", ["team-a", "", "a b;c%d", "ünï"])
def test_a_note_survives_its_header(tenant):
    note = RouteNote(tenant, 120, 136, 45.5)
    assert decode_note(encode_note(note).decode("latin-1")) == note


@pytest.mark.parametrize("value", ["", "a", "a 1 2", "a 1 2 3 4", "a x 2 3", "a -1 2 3", "a 1 2 nan", "a 1 2 -3"])
def test_a_mangled_note_is_ignored(value):
    assert decode_note(value) is None


def test_without_a_note_or_an_upstream_an_upstream_log_entry_says_nothing():
    entry = accesslog_pb2.HTTPAccessLogEntry(request=accesslog_pb2.HTTPRequestProperties(request_id="r"))
    assert read_peer_routed(entry) is None
    entry.request.request_headers[ROUTE_NOTE_HEADER] = "t 1 0 0"
    assert read_peer_routed(entry) is None  # no upstream host
    entry.common_properties.upstream_remote_address.socket_address.address = "::1"
    entry.common_properties.upstream_remote_address.socket_address.port_value = 8000
    assert read_peer_routed(entry).endpoint == "[::1]:8000"


def test_one_picker_counts_what_the_other_routed_until_its_end():
    a, b = picker(completion="access-log", peers=True), picker(completion="access-log", peers=True)
    r = _chat_as(a, KEY_A, request_id="r1")  # no keys on: the key is only a header here
    dest = _destination(r)
    b.access_log(upstream_log_msg("r1", dest, _note_of(r)))
    for p in (a, b):
        assert p.datastore.get(dest).in_flight == 1
    a.access_log(upstream_log_msg("r1", dest, _note_of(r)))  # its own: counted once
    assert a.datastore.get(dest).in_flight == 1
    for p in (a, b):  # the end comes to both
        p.access_log(access_log_msg("r1", usage={"prompt_tokens": 5, "completion_tokens": 3, "reported": True}))
        assert p.datastore.get(dest).in_flight == 0
    # only the routing picker counts the tenant's tokens (Prometheus sums the pickers)
    tokens = "inferstack_epp_tenant_tokens_total"
    label = {"tenant": a.metrics.tenant_label(""), "kind": "completion"}
    assert a.metrics.registry.get_sample_value(tokens, label) == 3
    assert b.metrics.registry.get_sample_value(tokens, label) is None


def test_a_start_reported_after_its_end_is_not_counted():
    b = picker(completion="access-log", peers=True)
    b.access_log(access_log_msg("r9"))
    b.access_log(upstream_log_msg("r9", "10.0.0.1:8000", "t 10 0 0"))
    assert b.datastore.get("10.0.0.1:8000").in_flight == 0 and len(b.in_flight) == 0


def test_a_tenants_quota_holds_across_both_pickers(tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- {{key: {KEY_A}, tenant: team-a, requests_per_minute: 1}}\n")
    a = picker(auth_file=keys, completion="access-log", peers=True)
    b = picker(auth_file=keys, completion="access-log", peers=True)
    r = _chat_as(a, KEY_A, request_id="r1")
    assert routed(r) and _note_of(r).startswith("team-a ")
    b.access_log(upstream_log_msg("r1", _destination(r), _note_of(r)))
    status, error, headers = _error(_chat_as(b, KEY_A, request_id="r2"))
    assert status == 429 and error["code"] == "rate_limit_exceeded" and headers["x-ratelimit-remaining-requests"] == "0"


def test_without_peers_a_route_carries_no_note():
    r = _chat_as(picker(), KEY_A, request_id="r1")
    assert ROUTE_NOTE_HEADER not in {h.header.key for h in r.request_body.response.header_mutation.set_headers}


def test_ledger_peer_entries_and_quota_records_are_pure():
    ep = make_endpoint("a:1", tracked=True)
    ledger = InFlightLedger(max_age_s=60, peers=True)
    assert ledger.start_peer("p1", ep, 40, now=0.0, tenant="t", charged=2.0)
    assert not ledger.start_peer("p1", ep, 40, now=0.0, tenant="t", charged=2.0)  # a retry's second attempt
    assert (ep.in_flight, ep.in_flight_tokens, ledger.of_tenant("t")) == (1, 40, 1)
    done = ledger.complete("p1")
    assert done is not None and done.peer and done.charged == 2.0 and ep.in_flight == 0
    quotas = Quotas()
    quotas.record("t", 300, now=0.0, request_id="p1")
    assert quotas.admit("t", None, 500, 300, now=1.0).kind == "tokens"  # 300 + 300 > 500
    assert quotas.settle("p1", 10) and quotas.admit("t", None, 500, 300, now=1.0) is not None
