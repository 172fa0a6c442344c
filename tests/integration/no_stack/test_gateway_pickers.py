"""Two pickers behind one Envoy (``gateway.pickers: 2``), real Envoy and real pickers in front of
echo backends: both route; each counts what the other routed (Envoy's upstream log) and every end;
a picker SIGKILLed under steady load fails no request (Envoy moves its streams to the other), and
the supervisor-style ``heal()`` brings it back into the rotation."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
from test_gateway_support import echo_backends, epp_gauge, routed_counts, running_gateway, wait_ready, wait_until

from inferstack.gateway.runtime import epp_health

pytestmark = pytest.mark.integration

IN_FLIGHT = "inferstack_epp_endpoint_in_flight_requests"


class Load:
    """``clients`` threads sending short streamed chat requests back to back until ``stop()``; every
    answer's status (with the body's start when not 200)."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    # ~60 ms each: the load keeps answers in flight without starving this 2-core
                    # machine (a starved picker's scrapes time out and it sees no endpoint ready)
                    r = client.post(f"{self.url}/v1/chat/completions", json={
                        "model": "echo", "stream": True, "echo_chunks": 3, "echo_delay_s": 0.02,
                        "messages": [{"role": "user", "content": "hi"}]})
                    self.statuses.append(r.status_code if r.status_code == 200 else f"{r.status_code} {r.text[:150]}")
                except httpx.HTTPError as exc:
                    self.statuses.append(repr(exc))

    def wait_for(self, more: int) -> None:
        target = len(self.statuses) + more
        wait_until(lambda: len(self.statuses) >= target, timeout_s=30, what=f"{more} more answers")

    def stop(self) -> list[int | str]:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        return self.statuses


def test_two_pickers_both_route_and_each_counts_the_others_requests():
    with echo_backends(1) as backends:
        addr = backends[0][0]
        with running_gateway([addr], pickers=2) as gw:
            wait_ready(gw, [addr])
            slow = {"model": "echo", "stream": True, "echo_chunks": 15, "echo_delay_s": 0.1,
                    "messages": [{"role": "user", "content": "a long answer"}]}
            done: list[int] = []

            def stream() -> None:
                with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json=slow, timeout=30) as r:
                    r.read()
                    done.append(r.status_code)

            threads = [threading.Thread(target=stream) for _ in range(4)]
            for t in threads:
                t.start()
            # Envoy spreads the streams over both pickers, yet each sees all four in flight
            for picker in (0, 1):
                wait_until(lambda p=picker: epp_gauge(gw, IN_FLIGHT, addr, picker=p) == 4.0, timeout_s=5,
                           what=f"picker {picker} to count all 4 open streams")
            for t in threads:
                t.join(30)
            assert done == [200] * 4
            for picker in (0, 1):
                wait_until(lambda p=picker: epp_gauge(gw, IN_FLIGHT, addr, picker=p) == 0.0, timeout_s=5,
                           what=f"picker {picker}'s count to fall back to 0")
            assert all(routed_counts(gw, p).get(addr, 0) > 0 for p in (0, 1)), "both pickers route"
            assert [p.state for p in gw.status().pickers] == ["running", "running"]


def test_a_picker_killed_under_load_fails_no_request_and_comes_back():
    with echo_backends(2) as backends:
        addrs = [a for a, _ in backends]
        with running_gateway(addrs, pickers=2) as gw:
            wait_ready(gw, addrs)
            load = Load(gw.url, clients=4)
            try:
                load.wait_for(50)
                for victim, name in ((1, "epp-1"), (0, "epp")):
                    os.kill(gw.procs[name].pid, signal.SIGKILL)
                    wait_until(lambda n=name: gw.procs[n].exit_code() is not None, what=f"{name} to die")
                    load.wait_for(100)  # all of it through the other picker
                    assert gw.heal() == [name]
                    port = gw.settings.picker_ports()[victim][0]
                    wait_until(lambda p=port: epp_health(gw.settings.epp.grpc_host, p) == "SERVING", timeout_s=15,
                               what=f"{name} to serve again")
                    before = sum(routed_counts(gw, victim).values())
                    wait_until(lambda v=victim, b=before: sum(routed_counts(gw, v).values()) > b + 10, timeout_s=15,
                               what=f"Envoy to send requests to {name} again")
            finally:
                statuses = load.stop()
            failed = [s for s in statuses if s != 200]
            assert len(statuses) > 250 and not failed, (len(statuses), failed[:10])
            st = gw.status()
            assert [p.restarts for p in st.pickers] == [1, 1] and st.envoy.restarts == 0


def _again(gw) -> float:  # type: ignore[no-untyped-def]
    """Requests that went round the listener a second time (Envoy's counter)."""
    text = httpx.get(f"http://127.0.0.1:{gw.settings.admin_port}/stats?filter=^cluster.gateway_again.upstream_rq_total$",
                     timeout=2).text
    return float(text.split(":")[1]) if ":" in text else 0.0


def test_a_request_whose_picker_stops_answering_goes_round_to_the_other():
    """Envoy retries no open ext_proc stream: a request on a picker that froze (SIGSTOP; a SIGKILL
    mid-decision is the same, only harder to time) times out there and is decided by the other on
    its second pass; with both pickers gone a request gets the JSON 503 at once."""
    with echo_backends(1) as backends:
        addr = backends[0][0]
        with running_gateway([addr], pickers=2) as gw:
            wait_ready(gw, [addr])
            frozen = gw.procs["epp-1"].pid
            os.kill(frozen, signal.SIGSTOP)
            try:
                results: list[int] = []
                threads = [threading.Thread(target=lambda: results.append(httpx.post(
                    f"{gw.url}/v1/chat/completions", timeout=15, json={
                        "model": "echo", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}).status_code))
                    for _ in range(6)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(20)
            finally:
                os.kill(frozen, signal.SIGCONT)
            assert results == [200] * 6
            assert _again(gw) >= 1  # at least one was on the frozen picker and went round
            for name in ("epp", "epp-1"):
                os.kill(gw.procs[name].pid, signal.SIGKILL)
                wait_until(lambda n=name: gw.procs[n].exit_code() is not None, what=f"{name} to die")
            t0 = time.monotonic()
            r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=15, json={
                "model": "echo", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 503 and r.headers["content-type"] == "application/json", r.text
            assert "endpoint picker" in r.json()["error"]["message"] and time.monotonic() - t0 < 2.0
