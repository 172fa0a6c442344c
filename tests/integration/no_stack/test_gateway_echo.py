"""Real Envoy + our EPP in front of minimal OpenAI-shaped echo backends: routing and error semantics
that need no LLM (fast). The echo backends' /metrics are set by the tests, so saturation is exact."""

from __future__ import annotations

import json
import subprocess
import threading

import httpx
import openai
import pytest

from inferstack.gateway import write_endpoints_file

from stackutil import interruptible
from test_gateway_support import echo_backends, epp_gauge, running_gateway, stop_process, wait_ready, wait_until

pytestmark = pytest.mark.integration

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def pair():
    with echo_backends(2) as backends:
        addrs = [a for a, _ in backends]
        # "batch" is a sheddable name for the served model (the backends list only "echo" at /v1/models)
        with running_gateway(addrs, objectives=[{"model": "batch", "priority": -1}],
                             rewrites=[{"model": "batch", "targets": [{"model": "echo"}]}],
                             saturation={"queue_depth_threshold": 3, "metrics_staleness_ms": 500}) as gw:
            wait_ready(gw, addrs)
            yield gw, addrs


def test_openai_client_chat_and_completions_stream_and_not(pair):
    gw, addrs = pair
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="unused")
    chat = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content.startswith("echo from")
    comp = client.completions.create(model="echo", prompt="hi", max_tokens=3)
    assert comp.choices[0].text.startswith("echo from")
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hi"}], stream=True)]
    assert "".join(p for p in pieces if p).startswith("echo from")
    texts = [c.choices[0].text for c in client.completions.create(model="echo", prompt="x", stream=True)]
    assert "".join(texts).startswith("echo from")
    assert [m.id for m in client.models.list()] == ["echo"]  # a body-less GET is routed too


def test_requests_spread_over_both_backends(pair):
    gw, addrs = pair
    served = {httpx.post(f"{gw.url}/v1/chat/completions",
                         json={**CHAT, "messages": [{"role": "user", "content": f"q{i}"}]}).headers["x-echo-backend"]
              for i in range(20)}
    assert served == {a.rsplit(":", 1)[1] for a in addrs}


def test_malformed_json_is_400_and_the_gateway_keeps_serving(pair):
    gw, _ = pair
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=b'{"model": "echo", "messages": [',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{gw.url}/v1/completions", json={"prompt": "no model"})
    assert r.status_code == 400 and "'model'" in r.json()["error"]["message"]
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT).status_code == 200


@pytest.mark.parametrize(("body", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"model": "echo", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested too deeply"),
    (b'{"model": "echo", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}", "not valid JSON"),
])
def test_hostile_bodies_are_400_json_and_the_picker_keeps_serving(pair, body, reason):
    gw, _ = pair
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and reason in r.json()["error"]["message"]
    dup = b'{"model": "nope", "model": "echo", "messages": [{"role": "user", "content": "dup"}]}'
    r = httpx.post(f"{gw.url}/v1/chat/completions", content=dup, headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["model"] == "echo"  # the last key, as vLLM reads it


def test_sheddable_request_gets_429_when_both_backends_are_saturated(pair):
    gw, addrs = pair
    try:
        for a in addrs:
            httpx.post(f"http://{a}/admin/metrics", json={"waiting": 10})
        for a in addrs:
            wait_until(lambda a=a: epp_gauge(gw, "inferstack_epp_endpoint_queue_requests", a) == 10.0,
                       what="EPP to scrape the saturated queue")
        r = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "batch"})
        assert r.status_code == 429 and r.json()["error"]["type"] == "too_many_requests"
        assert httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT).status_code == 200  # priority 0: served
        httpx.post(f"http://{addrs[0]}/admin/metrics", json={"waiting": 0})  # one backend has room again
        wait_until(lambda: epp_gauge(gw, "inferstack_epp_endpoint_queue_requests", addrs[0]) == 0.0,
                   what="EPP to scrape the drained queue")
        # the pool has room again: served, not shed. Which backend serves it is the scorers' call
        # (prefix affinity and no-hit LRU weigh as much as the queue: either may win)
        r = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "model": "batch"})
        assert r.status_code == 200 and r.json()["model"] == "echo"
    finally:
        for a in addrs:
            httpx.post(f"http://{a}/admin/metrics", json={"waiting": 0})


def test_5xx_before_any_byte_is_retried_on_the_fallback(pair):
    gw, addrs = pair
    failing = addrs[0]
    try:
        httpx.post(f"http://{failing}/admin/fail", json={"status": 503})
        results = [httpx.post(f"{gw.url}/v1/chat/completions",
                              json={**CHAT, "messages": [{"role": "user", "content": f"r{i}"}]}) for i in range(20)]
        assert all(r.status_code == 200 for r in results)
        assert {r.headers["x-echo-backend"] for r in results} == {addrs[1].rsplit(":", 1)[1]}
    finally:
        httpx.post(f"http://{failing}/admin/fail", json={"status": 0})


@pytest.mark.parametrize(("prompt_bytes", "requests"), [(20_000, 2000), (256_000, 600)])
def test_long_prompts_over_many_frames_never_fail_and_leave_nothing_buffered(pair, prompt_bytes, requests):
    """Bodies that reach the picker in several DATA frames: the picker once kept their bytes counted
    after routing, so every ~64 MiB of prompts it closed its Envoy connection (GOAWAY) and failed
    every request in flight on it. Now: no error, and the count is back at 0 when idle."""
    import asyncio

    gw, _ = pair
    errors: list[str] = []

    async def send_all() -> None:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            todo = iter(range(requests))

            async def worker() -> None:
                for i in todo:
                    body = {**CHAT, "messages": [{"role": "user", "content": f"{i} " + "x" * prompt_bytes}]}
                    r = await client.post("/v1/chat/completions", json=body)
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")

            await asyncio.gather(*(worker() for _ in range(20)))

    asyncio.run(send_all())
    assert errors == [], f"{len(errors)} of {requests} failed: {errors[:3]}"
    wait_until(lambda: epp_gauge(gw, "inferstack_epp_grpc_buffered_bytes") == 0.0,
               what="the picker's buffered bytes to return to 0")


def test_v1_models_answers_get_only(pair):
    gw, _ = pair
    for method in ("DELETE", "POST", "PUT"):
        r = httpx.request(method, f"{gw.url}/v1/models")
        assert r.status_code == 405 and r.headers["allow"] == "GET", (method, r.status_code, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{gw.url}/v1/models").status_code == 200


def test_http2_cleartext_client(pair):
    gw, _ = pair
    proc = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
                           "-H", "content-type: application/json", "-d", json.dumps(CHAT),
                           f"{gw.url}/v1/chat/completions"], capture_output=True, text=True, timeout=10)
    assert proc.stdout == "2 200", proc.stdout + proc.stderr


def test_no_ready_endpoint_is_503(tmp_path):
    eps = tmp_path / "endpoints.json"
    write_endpoints_file(eps, [])
    with running_gateway(endpoints_file=eps, run_dir=tmp_path / "run") as gw:
        r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT)
        assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"


def test_endpoints_file_changes_are_followed(tmp_path):
    eps = tmp_path / "endpoints.json"
    with echo_backends(2) as backends:
        (a, _), (b, _) = backends
        write_endpoints_file(eps, [a])
        with running_gateway(endpoints_file=eps, run_dir=tmp_path / "run") as gw:
            wait_ready(gw, [a])
            port_of = lambda r: r.headers["x-echo-backend"]  # noqa: E731
            assert {port_of(httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT)) for _ in range(5)} == {a[-5:]}
            write_endpoints_file(eps, [b])  # a replica replaced by another, as the supervisor would
            wait_ready(gw, [b])
            wait_until(lambda: epp_gauge(gw, "inferstack_epp_endpoint_ready", a) is None, what="a to leave")
            got = {port_of(httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT)) for _ in range(5)}
            assert got == {b.rsplit(":", 1)[1]}


def test_a_killed_backend_is_routed_around_without_failed_requests(tmp_path):
    with echo_backends(2) as backends:
        addrs = [a for a, _ in backends]
        with running_gateway(addrs, run_dir=tmp_path / "run") as gw:
            wait_ready(gw, addrs)
            statuses: list[int] = []
            failures: list[str] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client() as c:
                    while not stop.is_set():
                        r = c.post(f"{gw.url}/v1/chat/completions", json=CHAT)
                        statuses.append(r.status_code)
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {dict(r.headers)} {r.text[:200]}")

            threads = [threading.Thread(target=load) for _ in range(4)]
            for t in threads:
                t.start()
            wait_until(lambda: len(statuses) > 100, what="load to start")
            stop_process(backends[0][1])  # the echo answers at once, so no request had started on it
            n_at_kill = len(statuses)
            wait_until(lambda: len(statuses) > n_at_kill + 300, what="load after the kill")
            stop.set()
            for t in threads:
                t.join()
            assert statuses.count(200) == len(statuses), failures
            wait_until(lambda: epp_gauge(gw, "inferstack_epp_endpoint_ready", addrs[0]) == 0.0,
                       what="the EPP to drop the killed backend")


def test_status_reports_both_processes(pair):
    gw, _ = pair
    st = gw.status()
    assert st.state == "running"
    assert st.envoy.state == "running" and st.epp.state == "running"
    assert st.base_url == f"{gw.url}/v1"


def test_cli_gateway_runs_in_the_foreground_until_interrupted(tmp_path):
    import signal
    import sys

    from test_gateway_support import free_port

    with echo_backends(2) as backends:
        addrs = ",".join(a for a, _ in backends)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "inferstack", "gateway", "--endpoints", addrs, "--port", str(port),
             "--admin-port", str(free_port()), "--epp-port", str(free_port()),
             "--epp-metrics-port", str(free_port()), "--run-dir", str(tmp_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=interruptible)
        try:
            line = proc.stdout.readline()
            while line and "gateway on" not in line:
                line = proc.stdout.readline()
            assert f"http://127.0.0.1:{port}/v1" in line
            wait_until(lambda: httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                          json=CHAT).status_code == 200, what="the CLI gateway to serve")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            stop_process(proc)
        # both children are gone: nothing listens on the port any more
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)


def test_requests_go_only_to_the_backends_serving_their_model(tmp_path):
    """Backend a lists base + adapter "pirate" at /v1/models, b only base; b loads it later."""
    with echo_backends(2, models=[["base", "pirate"], ["base"]]) as backends:
        (a, _), (b, _) = backends
        pa, pb_ = a.rsplit(":", 1)[1], b.rsplit(":", 1)[1]
        split = {"model": "chat", "targets": [{"model": "base", "weight": 1}, {"model": "pirate", "weight": 1}]}
        with running_gateway([a, b], run_dir=tmp_path / "run", models_interval_ms=200, rewrites=[split]) as gw:
            wait_ready(gw, [a, b])
            wait_until(lambda: (epp_gauge(gw, "inferstack_epp_endpoint_served_models", a),
                                epp_gauge(gw, "inferstack_epp_endpoint_served_models", b)) == (2.0, 1.0),
                       what="the EPP to read both backends' /v1/models")

            def ask(model: str, i: int) -> httpx.Response:
                return httpx.post(f"{gw.url}/v1/chat/completions",
                                  json={"model": model, "messages": [{"role": "user", "content": f"q{i}"}]})

            adapter = [ask("pirate", i) for i in range(20)]
            assert all(r.status_code == 200 and r.json()["model"] == "pirate" for r in adapter)
            assert {r.headers["x-echo-backend"] for r in adapter} == {pa}
            assert {ask("base", i).headers["x-echo-backend"] for i in range(20)} == {pa, pb_}
            by_target: dict[str, set[str]] = {}
            for i in range(30):  # the 50/50 split "chat" -> base | pirate: filtered by the rewritten target
                r = ask("chat", i)
                by_target.setdefault(r.json()["model"], set()).add(r.headers["x-echo-backend"])
            assert set(by_target) == {"base", "pirate"} and by_target["pirate"] == {pa}

            r = ask("parrot", 0)
            assert r.status_code == 404 and r.headers["content-type"] == "application/json"
            assert r.json() == {"error": {
                "message": "The model `parrot` does not exist on any model server; served: base, pirate",
                "type": "NotFoundError", "param": "model", "code": 404}}

            def listed() -> list[tuple[str, str | None]]:
                r = httpx.get(f"{gw.url}/v1/models")
                assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
                return [(m["id"], m["parent"]) for m in r.json()["data"]]

            # the gateway's list is the union of the backends' (pirate is on a only), whoever asks
            assert {tuple(listed()) for _ in range(6)} == {(("base", None), ("pirate", "base"))}
            httpx.post(f"http://{b}/admin/models", json={"models": ["base", "poet"]})
            # listed at once, not at the next 200 ms poll: the EPP polls the lists again first
            assert listed() == [("base", None), ("pirate", "base"), ("poet", "base")]

            httpx.post(f"http://{b}/admin/models", json={"models": ["base", "pirate"]})  # loaded at runtime
            wait_until(lambda: epp_gauge(gw, "inferstack_epp_endpoint_served_models", b) == 2.0,
                       what="the EPP's next poll of b")
            assert {ask("pirate", 100 + i).headers["x-echo-backend"] for i in range(20)} == {pa, pb_}
