"""The supervisor's reconcile loop with real (tiny) replica processes: scale out and in, drain
before stop, rolling reconfigure without a gap in ready endpoints, failed starts, control requests."""

import json
import os
import signal
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from inferstack.autoscale.policy import AutoscalingPolicy
from inferstack.process import free_port_block, group_alive, port_is_free
from inferstack.stack.autoscaler import LocalAutoscaler
from inferstack.stack.config import StackConfig
from inferstack.stack.control import submit_request
from inferstack.stack.state import StateFile
from inferstack.stack.supervisor import Supervisor

FAKE = Path(__file__).with_name("fake_replica.py")


class FakeSupervisor(Supervisor):
    def _argv(self, port: int) -> list[str]:
        return [sys.executable, str(FAKE), str(port)]


def _config(replicas=1, **engine):
    settings = {"base_port": free_port_block(8, start=21000), "health_interval_s": 0.2,
                "drain_timeout_s": 10, "restart_backoff_s": 0.2, "terminate_timeout_s": 3, **engine}
    return StackConfig.model_validate({"model": "org/fake", "replicas": replicas, "engine": settings,
                                       "gateway": {"enabled": False}})


@pytest.fixture
def make(tmp_path):
    made = []

    def _make(config, autoscaler=None, **parts):
        sup = FakeSupervisor(config, Path(sys.executable), StateFile(tmp_path / "run" / "stack.json"),
                             autoscaler=autoscaler, **parts)
        made.append(sup)
        sup.start(progress=lambda _: None)
        return sup

    yield _make
    for sup in made:
        sup.stop(drain=False)


def _until(sup, cond, timeout=20.0, each=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.tick()
        if each is not None:
            each()
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"not reached in {timeout}s: {sup.snapshot().model_dump_json(include={'replicas'}, indent=1)}")


def _endpoints(sup):
    return json.loads(sup.endpoints_path.read_text())["endpoints"]


def _converged(sup, n):
    return lambda: len(sup.members) == n and all(m.ready and m.generation == sup.generation for m in sup.members)


def test_scale_out_gives_the_new_replica_its_own_slot_port_and_endpoint(make):
    sup = make(_config(1))
    assert len(_endpoints(sup)) == 1
    sup.set_desired(2, "test", "scaled 1 -> 2")
    _until(sup, _converged(sup, 2))
    ports = sorted(m.replica.spec.port for m in sup.members)
    assert ports == [sup.config.engine.base_port, sup.config.engine.base_port + 1]
    assert sorted(_endpoints(sup)) == sorted(f"127.0.0.1:{p}" for p in ports)
    assert [m.name for m in sup.members] == ["r0", "r1"]
    messages = [e.message for e in sup.events]
    assert any("replica r1 ready" in m for m in messages)


def test_scale_in_takes_the_replica_out_of_routing_then_waits_for_its_requests(make, tmp_path, monkeypatch):
    in_flight = tmp_path / "in-flight"
    monkeypatch.setenv("FAKE_IN_FLIGHT_FILE", str(in_flight))
    sup = make(_config(2))
    r1 = next(m for m in sup.members if m.name == "r1")
    in_flight.write_text("1")  # every replica reports one running request
    sup.set_desired(1, "test", "scaled 2 -> 1")
    sup.tick()
    assert r1.retiring and r1.replica.state == "draining"
    assert _endpoints(sup) == [f"127.0.0.1:{sup.members[0].replica.spec.port}"]  # out of routing at once
    time.sleep(2.5)  # past the routing settle time: only the running request keeps it alive
    sup.tick()
    assert r1 in sup.members and group_alive(r1.replica.pid)
    in_flight.write_text("0")
    _until(sup, lambda: r1 not in sup.members)
    assert not group_alive(r1.replica.pid)
    assert [m.name for m in sup.members] == ["r0"]
    assert any("replica r1 removed" in e.message for e in sup.events)


def test_rolling_reconfigure_never_drops_below_the_desired_ready_count(make):
    sup = make(_config(2))
    old_pids = {m.replica.pid for m in sup.members}
    submit_request(sup.run_dir, "reconfigure", {"changes": {"speculative": {"method": "none"}}})
    least = []
    _until(sup, _converged(sup, 2), timeout=40, each=lambda: least.append(len(_endpoints(sup))))
    assert min(least) >= 2
    assert sup.generation == 2 and sup.config.speculative.method == "none"
    assert not old_pids & {m.replica.pid for m in sup.members}
    answer = next(iter(sup.requests.values()))
    assert answer.ok and "generation 2" in answer.message


class NoGateway:
    """The front-end protocol with nothing behind it (the gateway's own tests start Envoy)."""

    url = "http://127.0.0.1:9"

    def check_ports(self): ...
    def start(self): ...
    def stop(self): ...
    def status(self):
        from inferstack.gateway.runtime import EnvoyStatus, EppStatus, GatewayStatus
        return GatewayStatus(state="running", url=self.url, base_url=f"{self.url}/v1", run_dir="-",
                             envoy=EnvoyStatus(pid=None, state="stopped", restarts=0, log="-", port=9, admin_port=9),
                             epp=EppStatus(pid=None, state="stopped", restarts=0, log="-", grpc_port=9,
                                           metrics_port=9), epp_failure_mode="closed")
    def heal(self): return []


def test_scale_to_zero_and_back_by_request(tmp_path):
    config = _config(1).model_copy(update={"gateway": StackConfig().gateway})
    sup = FakeSupervisor(config, Path(sys.executable), StateFile(tmp_path / "stack.json"),
                         front_end_factory=lambda *_: NoGateway())
    sup.start(progress=lambda _: None)
    try:
        submit_request(sup.run_dir, "scale", {"replicas": 0})
        _until(sup, lambda: not sup.members)
        assert _endpoints(sup) == [] and sup.snapshot().desired_replicas == 0
        submit_request(sup.run_dir, "scale", {"replicas": 1})
        _until(sup, _converged(sup, 1))
    finally:
        sup.stop(drain=False)


def test_a_replica_that_fails_to_start_backs_off_and_the_stack_keeps_serving(make, monkeypatch):
    sup = make(_config(1))
    monkeypatch.setenv("FAKE_EXIT", "3")
    sup.set_desired(2, "test", "scaled 1 -> 2")
    r1 = None

    def restarted():
        nonlocal r1
        r1 = next((m for m in sup.members if m.name == "r1"), None)
        return r1 is not None and r1.replica.restarts >= 2

    _until(sup, restarted)
    assert r1.replica.last_exit == "exited with code 3 while starting"
    assert any("fake replica: failing on purpose" in e.message for e in sup.events)
    assert len(_endpoints(sup)) == 1  # r0 keeps serving
    sup.set_desired(1, "test", "scaled 2 -> 1")
    _until(sup, lambda: [m.name for m in sup.members] == ["r0"])


def test_a_health_answer_from_a_killed_incarnation_does_not_make_the_next_one_ready(make):
    sup = make(_config(1))
    member = sup.members[0]
    old_pid = member.replica.pid
    member.replica.spec.env["FAKE_START_DELAY"] = "3"  # the next incarnation listens only after 3 s
    os.killpg(old_pid, signal.SIGKILL)
    member.replica.proc.wait()
    answered: Future = Future()
    answered.set_result(True)
    member.probe = answered  # a /health 200 sent just before the kill, collected after it
    _until(sup, lambda: member.replica.pid != old_pid and member.replica.state == "starting")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # not listening yet: never ready
        sup.tick()
        assert member.replica.state == "starting", member.replica.state
        time.sleep(0.05)
    _until(sup, lambda: member.ready)
    assert member.replica.restarts == 1 and "exited with code -9" in member.replica.last_exit


def test_a_warm_up_answered_for_a_killed_incarnation_warms_nothing(make):
    sup = make(_config(1))
    member = sup.members[0]
    stale = member.incarnation
    member.incarnation += 1  # as a restart does: the warm-up below began before it, ends after it
    member.warmed = False
    assert sup._warm_up(member, stale) is False and not member.warmed
    assert sup._warm_up(member, member.incarnation) is True and member.warmed


def test_a_replica_enters_routing_only_after_its_warm_up_answered(make, tmp_path, monkeypatch):
    warmed = tmp_path / "warm-ups"
    monkeypatch.setenv("FAKE_WARM_UP_FILE", str(warmed))
    sup = make(_config(1))
    assert warmed.read_text() == "warm-up\n"  # r0 before `start` returned (it was ready)
    sup.set_desired(2, "test", "scaled 1 -> 2")
    _until(sup, _converged(sup, 2))
    assert warmed.read_text().count("warm-up") == 2 and len(_endpoints(sup)) == 2


def test_warm_up_can_be_turned_off(make, tmp_path, monkeypatch):
    warmed = tmp_path / "warm-ups"
    monkeypatch.setenv("FAKE_WARM_UP_FILE", str(warmed))
    make(_config(1, warm_up=False))
    assert not warmed.exists()


def test_a_hanging_health_check_does_not_stall_the_loop(make, monkeypatch):
    sup = make(_config(1))
    monkeypatch.setenv("FAKE_HEALTH_HANG", "20")  # the replica started next answers /health after 20 s
    sup.set_desired(2, "test", "scaled 1 -> 2")
    _until(sup, lambda: len(sup.members) == 2)
    added = sup.members[1]
    _until(sup, lambda: not port_is_free("127.0.0.1", added.replica.spec.port))  # listening: /health hangs now
    listening = added.probe  # None, or one that may have been refused before it listened
    _until(sup, lambda: added.probe is not None and added.probe is not listening)
    hanging = added.probe
    sup.tick()  # a tick that waited for the probe would return only once it is done (1 s timeout)
    assert hanging is not None and not hanging.done()
    assert added.probe is hanging  # still in flight, in the pool


@pytest.mark.parametrize(
    ("action", "payload", "message"),
    [
        ("scale", {"replicas": -1}, "replicas must be an integer 0..64, got -1"),
        ("scale", {"replicas": "2"}, "replicas must be an integer"),
        ("scale", {"replicas": 0}, "0 replicas needs the gateway"),
        ("reconfigure", {"changes": {"model": "org/other"}}, "cannot change model on a running stack"),
        ("reconfigure", {"changes": {"engine": {"base_port": 9000}}}, "engine.base_port is fixed"),
        ("reconfigure", {"changes": {"speculative": {"method": "bogus"}}}, "speculative"),
        ("reconfigure", {"changes": {}}, "nothing to change"),
        ("explode", {}, "unknown action 'explode'"),
    ],
)
def test_bad_requests_are_answered_with_a_reason_and_change_nothing(make, action, payload, message):
    sup = make(_config(1))
    request_id = submit_request(sup.run_dir, action, payload)
    sup.tick()
    answer = sup.requests[request_id]
    assert not answer.ok and message in answer.message
    assert sup.desired == 1 and sup.generation == 1
    assert StateFile(sup.state.path).read().requests[request_id].ok is False


def test_scale_is_refused_while_the_autoscaler_owns_the_count(make):
    policy = AutoscalingPolicy(min_replicas=1, max_replicas=2, metric="waiting", target=3)
    sup = make(_config(1), autoscaler=LocalAutoscaler(policy))
    request_id = submit_request(sup.run_dir, "scale", {"replicas": 2})
    sup.tick()
    assert "autoscaling is on (min 1, max 2, waiting:3)" in sup.requests[request_id].message


def test_the_autoscaler_scales_out_on_a_queue_and_the_supervisor_applies_it(make, tmp_path, monkeypatch):
    policy = AutoscalingPolicy(min_replicas=1, max_replicas=2, metric="running", target=2, sync_period_s=0.1)
    in_flight = tmp_path / "in-flight"
    monkeypatch.setenv("FAKE_IN_FLIGHT_FILE", str(in_flight))
    sup = make(_config(1), autoscaler=LocalAutoscaler(policy))
    in_flight.write_text("5")  # 5 running on 1 replica, target 2 -> ceil(2.5) = 3, capped at 2
    sup._phase = "ready"
    sup._autoscale()
    assert sup.desired == 2
    event = sup.events[-1]
    assert event.kind == "autoscaler"
    assert event.message.startswith("scaled 1 -> 2: vllm:num_requests_running avg 5 > target 2")
    _until(sup, _converged(sup, 2))


class FakeMonitoring:
    """The part the supervisor runs Prometheus through (its process is tested in tests/unit/monitoring)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def check_ports(self) -> None:
        self.calls.append("check_ports")

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def heal(self) -> list[str]:
        return []

    def status(self):
        from inferstack.monitoring import MonitoringStatus
        return MonitoringStatus(state="running", url="http://127.0.0.1:1", pid=None, restarts=0, log="",
                                data_dir="", supervisor_metrics_url=None)


def test_monitoring_follows_the_replicas_and_the_supervisor_serves_its_figures(make):
    import httpx

    from inferstack.process import free_port

    part = FakeMonitoring()
    metrics_port = free_port()
    sup = make(_config(1), monitoring_factory=lambda targets, run_dir: part, metrics_port=metrics_port)
    assert part.calls == ["check_ports", "start"]
    targets = lambda: json.loads(sup.targets_path.read_text())  # noqa: E731
    assert targets() == [{"targets": [f"127.0.0.1:{sup.config.engine.base_port}"], "labels": {"replica": "r0"}}]
    sup.set_desired(2, "scale", "scaled 1 -> 2")
    _until(sup, _converged(sup, 2))
    assert [t["labels"]["replica"] for t in targets()] == ["r0", "r1"]
    page = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert "inferstack_stack_desired_replicas 2.0" in page and "inferstack_stack_ready_replicas 2.0" in page
    assert 'inferstack_stack_scaling_events_total{source="scale"} 1.0' in page
    assert sup.snapshot().monitoring is not None
    sup.stop(drain=False)
    assert part.calls[-1] == "stop"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1)
