"""The in-flight ledger: picks undone by completion reports, once, or by expiry."""

from inferstack.gateway.inflight import InFlightLedger

from .conftest import make_endpoint


def _picked(ep, tokens):
    ep.in_flight += 1
    ep.in_flight_tokens += tokens


def test_complete_undoes_the_pick_once():
    ep = make_endpoint("a:1", tracked=True)
    ledger = InFlightLedger(max_age_s=60)
    _picked(ep, 100)
    ledger.start("r1", ep, 100, now=0.0)
    _picked(ep, 50)
    ledger.start("r2", ep, 50, now=0.0)
    assert (ep.in_flight, ep.in_flight_tokens) == (2, 150)
    assert ledger.complete("r1") and not ledger.complete("r1")  # a repeated report is ignored
    assert (ep.in_flight, ep.in_flight_tokens, len(ledger)) == (1, 50, 1)
    assert not ledger.complete("unknown")  # answered by the EPP itself, or from before a restart


def test_entries_expire_in_start_order():
    ep = make_endpoint("a:1", tracked=True)
    ledger = InFlightLedger(max_age_s=10)
    for i, t in enumerate((0.0, 5.0, 9.0)):
        _picked(ep, 10)
        ledger.start(f"r{i}", ep, 10, now=t)
    assert ledger.expire(now=12.0) == 1  # only r0 is older than 10 s
    assert (ep.in_flight, ep.in_flight_tokens, ledger.expired) == (2, 20, 1)
    assert ledger.expire(now=100.0) == 2 and ep.in_flight == 0


def test_counts_never_go_negative_and_empty_ids_are_not_tracked():
    ep = make_endpoint("a:1", tracked=True)
    ledger = InFlightLedger(max_age_s=10)
    ledger.start("", ep, 10)
    assert len(ledger) == 0
    ledger.start("r", ep, 10)  # recorded without a matching scheduler increment
    ledger.complete("r")
    assert (ep.in_flight, ep.in_flight_tokens) == (0, 0)


def test_forget_endpoint_drops_its_entries():
    a, b = make_endpoint("a:1"), make_endpoint("b:1")
    ledger = InFlightLedger(max_age_s=10)
    ledger.start("r1", a, 1)
    ledger.start("r2", b, 1)
    ledger.forget_endpoint("a:1")
    assert len(ledger) == 1 and not ledger.complete("r1") and ledger.complete("r2")
