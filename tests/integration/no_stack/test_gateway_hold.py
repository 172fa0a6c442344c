"""Scale from zero with real Envoy + our EPP: a request that arrives with no replica is held (past
Envoy's 2 s ext_proc message timeout, which the EPP overrides) until an echo backend appears in the
discovery file, then routed there; with none appearing it gets the hold timeout's JSON 503; a full
hold queue answers 503 at once; a client that leaves takes its request out of the hold."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from test_gateway_support import echo_backends, epp_gauge, running_gateway, wait_until

from inferstack.gateway import write_endpoints_file
from inferstack.gateway.runtime import epp_health
from inferstack.gateway.settings import HoldSettings

pytestmark = pytest.mark.integration

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}
HELD = "inferstack_epp_held_requests"
OUTCOMES = "inferstack_epp_hold_outcomes_total"


def _post_in_background(url: str) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def post() -> None:
        t0 = time.monotonic()
        result["response"] = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30)
        result["took"] = time.monotonic() - t0

    thread = threading.Thread(target=post)
    thread.start()
    return thread, result


def _envoy_stat(gw, name: str) -> int:  # type: ignore[no-untyped-def]
    text = httpx.get(f"http://127.0.0.1:{gw.settings.admin_port}/stats?filter={name}", timeout=2).text
    return int(text.split(": ")[1])


def test_a_request_with_no_replica_is_held_until_one_appears_then_routed(tmp_path):
    eps = tmp_path / "endpoints.json"
    write_endpoints_file(eps, [])
    with echo_backends(1) as backends:
        addr = backends[0][0]
        with running_gateway(endpoints_file=eps, run_dir=tmp_path / "run",
                             hold=HoldSettings(enabled=True, timeout_s=15)) as gw:
            # no endpoint, yet the EPP takes requests
            assert epp_health(gw.settings.epp.grpc_host, gw.settings.epp.grpc_port) == "SERVING"
            thread, result = _post_in_background(gw.url)
            wait_until(lambda: epp_gauge(gw, HELD) == 1.0, what="the request to be held")
            time.sleep(2.5)  # past Envoy's 2 s per-message ext_proc timeout
            assert thread.is_alive() and "response" not in result
            write_endpoints_file(eps, [addr])  # the supervisor's replica is up
            thread.join(15)
            r = result["response"]
            assert r.status_code == 200, r.text
            assert r.headers["x-echo-backend"] == addr.rsplit(":", 1)[1]
            assert result["took"] >= 2.5
            assert epp_gauge(gw, OUTCOMES, outcome="routed") == 1.0
            assert epp_gauge(gw, HELD) == 0.0
            assert _envoy_stat(gw, "ext_proc.override_message_timeout_received") == 1
            # held no more: the next request is routed at once
            assert httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=5).status_code == 200


def test_hold_timeout_full_queue_and_a_client_that_leaves(tmp_path):
    eps = tmp_path / "endpoints.json"
    write_endpoints_file(eps, [])
    with running_gateway(endpoints_file=eps, run_dir=tmp_path / "run",
                         hold=HoldSettings(enabled=True, timeout_s=2, max_requests=1)) as gw:
        # a client that gives up: Envoy resets the ext_proc stream and the EPP drops its request
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=0.5)
        wait_until(lambda: epp_gauge(gw, OUTCOMES, outcome="cancelled") == 1.0, what="the hold to be cancelled")
        assert epp_gauge(gw, HELD) == 0.0

        thread, result = _post_in_background(gw.url)
        wait_until(lambda: epp_gauge(gw, HELD) == 1.0, what="the request to be held")
        t0 = time.monotonic()
        full = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=10)
        assert time.monotonic() - t0 < 1.0  # at once, not after the hold timeout
        assert full.status_code == 503 and full.headers["content-type"] == "application/json"
        assert "hold queue is full" in full.json()["error"]["message"]

        thread.join(10)
        r = result["response"]
        assert r.status_code == 503 and r.headers["content-type"] == "application/json"
        err = r.json()["error"]
        assert err["type"] == "service_unavailable"
        assert err["message"].startswith("no model server became ready within 2 s (scale-from-zero hold)")
        assert 2.0 <= result["took"] < 4.0
        assert epp_gauge(gw, OUTCOMES, outcome="timeout") == 1.0
        assert epp_gauge(gw, OUTCOMES, outcome="full") == 1.0
        assert epp_gauge(gw, HELD) == 0.0
