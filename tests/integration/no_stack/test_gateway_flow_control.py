"""Flow control with real Envoy + our EPP in front of an echo backend that streams slowly: past the
bound on outstanding requests, a busy tenant's requests wait in the picker (beyond Envoy's 2 s
per-message timer) while a quiet tenant's request starts at once in the reserved room; a full queue
and an expired wait get OpenAI-style 429s with Retry-After through Envoy; streams already routed
finish."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_gateway_support import echo_backends, epp_gauge, running_gateway, wait_until

from inferstack.gateway import Gateway
from inferstack.gateway.settings import FlowControlSettings
from inferstack.wire import FAIRNESS_ID_HEADER

pytestmark = pytest.mark.integration

WAITING = "inferstack_epp_flow_queue_requests"


def _slow(seconds: float) -> dict:
    chunks = max(1, round(seconds / 0.1))
    return {"model": "echo", "stream": True, "echo_chunks": chunks, "echo_delay_s": 0.1,
            "messages": [{"role": "user", "content": "hello"}]}


def _fast() -> dict:
    return {"model": "echo", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


class Client(threading.Thread):
    """One request in the background; when it finished and how."""

    def __init__(self, url: str, tenant: str, body: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.tenant, self.body = url, tenant, body
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.text = ""
        self.done_at = 0.0
        self.start()

    def run(self) -> None:
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=self.body, timeout=30,
                          headers={FAIRNESS_ID_HEADER: self.tenant}) as r:
            self.text = r.read().decode()
            self.status, self.headers = r.status_code, r.headers
        self.done_at = time.monotonic()


@contextlib.contextmanager
def flow_gateway(run_dir: Path, flow: FlowControlSettings) -> Iterator[tuple[Gateway, str]]:
    """Envoy + picker with ``flow`` in front of one echo backend, scraped ready; (gateway, backend)."""
    with echo_backends(1) as backends, running_gateway([backends[0][0]], run_dir=run_dir, flow_control=flow) as gw:
        backend = backends[0][0]
        wait_until(lambda: epp_gauge(gw, "inferstack_epp_endpoint_ready", backend) == 1.0,
                   what="the EPP to see the backend ready")
        yield gw, backend


def test_saturated_requests_wait_in_fair_order_and_overflow_gets_429(tmp_path):
    flow = FlowControlSettings(enabled=True, max_requests_per_endpoint=2, max_requests=3, max_wait_s=6,
                               retry_after_s=3)
    with flow_gateway(tmp_path / "run", flow) as (gw, backend):
        running = [Client(gw.url, "noisy", _slow(3.0)) for _ in range(2)]  # the endpoint's bound
        wait_until(lambda: epp_gauge(gw, "inferstack_epp_endpoint_in_flight_requests", backend) == 2.0,
                   what="two streams in flight")
        backlog = [Client(gw.url, "noisy", _slow(0.5)) for _ in range(3)]
        wait_until(lambda: epp_gauge(gw, WAITING, tenant="noisy") == 3.0, what="the noisy backlog to wait")
        t0 = time.monotonic()
        quiet = Client(gw.url, "quiet", _fast())  # nothing running: the reserved room, at once
        quiet.join(10)
        assert quiet.status == 200 and quiet.done_at - t0 < 1.5 and epp_gauge(gw, WAITING, tenant="noisy") == 3.0
        # the queue holds 3: one more is refused at once, through Envoy, in OpenAI's shape
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=_fast(), headers={FAIRNESS_ID_HEADER: "noisy"})
        assert r.status_code == 429 and r.headers["retry-after"] == "3", r.text
        assert r.json()["error"]["code"] == "queue_full" and "retry after 3 s" in r.json()["error"]["message"]
        for c in (*running, *backlog):
            c.join(20)
        assert [c.status for c in (*running, *backlog)] == [200] * 5  # waited past Envoy's 2 s timer
        assert all(c.text.count("data:") >= 30 for c in running)  # the routed streams ran to their end
        assert min(c.done_at for c in backlog) - t0 > 2.0
        assert epp_gauge(gw, "inferstack_epp_flow_rejected_requests_total", reason="queue_full", tenant="noisy") == 1.0
        assert epp_gauge(gw, "inferstack_epp_held_requests") == 0.0


def test_a_wait_past_max_wait_gets_429_and_routed_streams_are_untouched(tmp_path):
    flow = FlowControlSettings(enabled=True, max_requests_per_endpoint=1, reserve_per_endpoint=0, max_wait_s=1,
                               retry_after_s=2)
    with flow_gateway(tmp_path / "run", flow) as (gw, backend):
        long = Client(gw.url, "a", _slow(3.0))
        wait_until(lambda: epp_gauge(gw, "inferstack_epp_endpoint_in_flight_requests", backend) == 1.0,
                   what="the stream in flight")
        t0 = time.monotonic()
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=_fast(), headers={FAIRNESS_ID_HEADER: "b"}, timeout=10)
        assert r.status_code == 429 and r.headers["retry-after"] == "2", r.text
        assert r.json()["error"]["code"] == "wait_expired" and 1.0 <= time.monotonic() - t0 < 5
        long.join(10)
        assert long.status == 200 and long.text.count("data:") >= 30


def test_a_picker_killed_while_requests_wait_answers_them_at_once_and_cuts_no_routed_stream(tmp_path):
    import os
    import signal

    flow = FlowControlSettings(enabled=True, max_requests_per_endpoint=2, max_requests=10, max_wait_s=20)
    with flow_gateway(tmp_path / "run", flow) as (gw, backend):
        running = [Client(gw.url, "noisy", _slow(3.0)) for _ in range(2)]
        wait_until(lambda: epp_gauge(gw, "inferstack_epp_endpoint_in_flight_requests", backend) == 2.0,
                   what="two streams in flight")
        waiting = [Client(gw.url, "noisy", _slow(0.5)) for _ in range(3)]
        wait_until(lambda: epp_gauge(gw, WAITING, tenant="noisy") == 3.0, what="three requests to wait")
        t0 = time.monotonic()
        os.kill(gw.status().epp.pid, signal.SIGKILL)  # type: ignore[arg-type]
        for c in waiting:
            c.join(10)
        # the waiting ones lose their ext_proc stream: Envoy answers 503 (fail closed) at once, no hang
        assert [c.status for c in waiting] == [503] * 3 and max(c.done_at for c in waiting) - t0 < 2.0
        assert all("endpoint picker" in c.text for c in waiting)
        assert gw.heal() == ["epp"]
        for c in running:
            c.join(20)
        assert [c.status for c in running] == [200, 200] and all(c.text.count("data:") >= 30 for c in running)
        wait_until(lambda: httpx.post(f"{gw.url}/v1/chat/completions", json=_fast(), timeout=5).status_code == 200,
                   timeout_s=15, what="routing to resume after the picker's restart")
