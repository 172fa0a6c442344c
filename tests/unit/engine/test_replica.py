"""Replica process handling with real (tiny) processes: the group dies whole, logs are tailed."""

import os
import sys
import time

from inferstack.engine.replica import Replica, ReplicaSpec
from inferstack.process import group_alive, log_tail, stop_process_group

# A parent that leaves a child behind, like vLLM's API server and its engine core.
TREE = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print('up', flush=True); time.sleep(60)"


def _replica(tmp_path, code=TREE):
    spec = ReplicaSpec(name="r0", host="127.0.0.1", port=1, argv=[sys.executable, "-c", code],
                       env=dict(os.environ), cores=[sorted(os.sched_getaffinity(0))[0]],
                       log_path=tmp_path / "r0.log")
    return Replica(spec)


def test_stop_kills_the_whole_group_even_after_the_leader_died(tmp_path):
    replica = _replica(tmp_path)
    replica.start()
    deadline = time.monotonic() + 10
    while "up" not in log_tail(replica.spec.log_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = replica.pid
    os.kill(pid, 9)  # the leader crashes; its child lives on in the group
    replica.proc.wait()
    assert group_alive(pid)
    replica.stop(drain_timeout_s=0, terminate_timeout_s=2)
    assert not group_alive(pid)
    assert replica.state == "stopped"


def test_the_child_is_pinned_to_its_cores(tmp_path):
    replica = _replica(tmp_path)
    replica.start()
    try:
        assert os.sched_getaffinity(replica.pid) == set(replica.spec.cores)
    finally:
        replica.stop(0, 2)


def test_sigterm_is_escalated_to_sigkill(tmp_path):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    replica = _replica(tmp_path, stubborn)
    replica.start()
    while "up" not in log_tail(replica.spec.log_path):
        time.sleep(0.05)
    began = time.monotonic()
    stop_process_group(replica.pid, terminate_timeout_s=0.5)
    assert not group_alive(replica.pid)
    assert time.monotonic() - began < 5


def test_unanswered_health_and_log_tail(tmp_path):
    replica = _replica(tmp_path, "print('\\n'.join(f'line {i}' for i in range(100)))")
    replica.start()
    replica.proc.wait()
    assert replica.exited() == 0
    assert not replica.healthy(timeout_s=0.2)
    assert log_tail(replica.spec.log_path, 3).splitlines() == ["line 97", "line 98", "line 99"]
    replica.stop(0, 1)
