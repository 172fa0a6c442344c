"""The EPP dies while Envoy serves (real Envoy, real EPP, echo backends with slow streams).

Routed streams never depend on the EPP (it ends each ext_proc stream once it has decided); new
requests get a fast, clear answer while it is down (fail closed: 503 JSON; fail open: Envoy
routes them itself); ``heal()`` restarts the EPP alone, Envoy keeps its pid, routing resumes.
Completion tracking: the in-flight gauge rises with open streams and falls back to 0 at their end.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from test_gateway_support import echo_backends, epp_gauge, running_gateway, wait_ready, wait_until

from inferstack.gateway.runtime import epp_health

pytestmark = pytest.mark.integration

SLOW = {"model": "echo", "stream": True, "echo_chunks": 20, "echo_delay_s": 0.1,
        "messages": [{"role": "user", "content": "a long answer please"}]}


def _stream(url: str, results: dict, i: int, started: threading.Event | None = None) -> None:
    chunks = 0
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=SLOW, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    chunks += 1
                    if started is not None and chunks == 1:
                        started.set()
                elif line == "data: [DONE]":
                    results[i] = ("done", r.status_code, chunks)
                    return
        results[i] = ("no [DONE]", r.status_code, chunks)
    except httpx.HTTPError as exc:
        results[i] = ("cut", repr(exc), chunks)


def _open_streams(url: str, n: int) -> tuple[list[threading.Thread], dict]:
    results: dict = {}
    started = [threading.Event() for _ in range(n)]
    threads = [threading.Thread(target=_stream, args=(url, results, i, started[i])) for i in range(n)]
    for t in threads:
        t.start()
    for ev in started:
        assert ev.wait(10), "a stream did not start"
    return threads, results


def _chat(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=10,
                      json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]})


def test_epp_sigkill_cuts_no_stream_fails_closed_and_heals_alone():
    with echo_backends(2) as backends:
        addrs = [a for a, _ in backends]
        with running_gateway(addrs) as gw:
            wait_ready(gw, addrs)
            envoy_pid, epp_pid = gw.status().envoy.pid, gw.status().epp.pid
            threads, results = _open_streams(gw.url, 8)
            os.kill(epp_pid, signal.SIGKILL)
            wait_until(lambda: gw.procs["epp"].exit_code() is not None, what="the EPP to die")
            t0 = time.monotonic()
            down = _chat(gw.url)
            took = time.monotonic() - t0
            assert down.status_code == 503, down.text
            assert down.headers["content-type"] == "application/json"
            assert "endpoint picker" in json.loads(down.text)["error"]["message"]
            assert took < 1.0  # fast, never a hang
            assert gw.heal() == ["epp"]
            for t in threads:
                t.join(30)
            assert [results[i][0] for i in range(8)] == ["done"] * 8, results
            assert all(r[2] == 20 for r in results.values())
            wait_until(lambda: epp_health(gw.settings.epp.grpc_host, gw.settings.epp.grpc_port) == "SERVING",
                       timeout_s=15, what="the restarted EPP to serve")
            wait_until(lambda: _chat(gw.url).status_code == 200, timeout_s=10, what="routing to resume")
            st = gw.status()
            assert st.envoy.pid == envoy_pid and st.envoy.restarts == 0
            assert st.epp.pid != epp_pid and st.epp.restarts == 1


def test_epp_down_fails_open_when_configured():
    with echo_backends(1) as backends:
        addrs = [a for a, _ in backends]
        with running_gateway(addrs, failure_mode="open") as gw:
            wait_ready(gw, addrs)
            os.kill(gw.status().epp.pid, signal.SIGKILL)
            wait_until(lambda: gw.procs["epp"].exit_code() is not None, what="the EPP to die")
            r = _chat(gw.url)
            assert r.status_code == 200 and r.headers["x-echo-backend"] == addrs[0].rsplit(":", 1)[1]


def test_health_is_not_serving_without_a_ready_endpoint():
    with running_gateway(["127.0.0.1:9"]) as gw:  # discard port: never ready
        assert epp_health(gw.settings.epp.grpc_host, gw.settings.epp.grpc_port) == "NOT_SERVING"


def test_in_flight_counts_follow_streams_to_their_end():
    with echo_backends(1) as backends:
        addrs = [a for a, _ in backends]
        with running_gateway(addrs) as gw:
            wait_ready(gw, addrs)
            threads, results = _open_streams(gw.url, 3)
            # the echo backend's /metrics says 0 waiting / 0 running: what the EPP sees is its own count,
            # which must survive scrapes (75 ms apart) until each response has ended
            time.sleep(0.5)
            assert epp_gauge(gw, "inferstack_epp_endpoint_in_flight_requests", addrs[0]) == 3.0
            for t in threads:
                t.join(30)
            assert all(r[0] == "done" for r in results.values())
            wait_until(lambda: epp_gauge(gw, "inferstack_epp_endpoint_in_flight_requests", addrs[0]) == 0.0,
                       timeout_s=5, what="in-flight count back to 0")
