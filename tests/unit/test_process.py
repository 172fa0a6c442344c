"""Choosing ports: outside the kernel's ephemeral range, distinct, free, never handed out twice.
The supervised process: restart delays by the clock given, a whole process group stopped, a start
that fails named with its log tail."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from inferstack.process import (
    CHOSEN_PORTS_START,
    _Chosen,
    chosen_port_pool,
    ephemeral_port_range,
    free_port,
    free_ports,
)


def test_chosen_ports_avoid_the_kernels_ephemeral_range() -> None:
    low, high = ephemeral_port_range()
    ports = free_ports(40)
    assert len(set(ports)) == 40
    assert all(p >= CHOSEN_PORTS_START and not low <= p <= high for p in ports)


def test_a_port_is_never_handed_out_twice_by_one_process() -> None:
    seen = set(free_ports(20))
    for _ in range(30):
        port = free_port()
        assert port not in seen
        seen.add(port)


def test_a_bound_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ports this worker handed out to earlier tests, or that another lane's servers hold, are not
    # this test's: start from a clean record, and leave free exactly 3 ports this test could bind.
    monkeypatch.setattr(_Chosen, "handed_out", set())
    pool = chosen_port_pool(ephemeral_port_range())[:200]
    holders = []
    try:
        for port in pool:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            holders.append(sock)
        assert len(holders) >= 3, "the test needs 3 free ports in the pool"
        released = []
        for sock in holders[-3:]:
            released.append(sock.getsockname()[1])
            sock.close()
        del holders[-3:]
        chosen = free_ports(1, pool=pool)
        assert chosen[0] in released
    finally:
        for sock in holders:
            sock.close()


def test_an_exhausted_pool_says_so() -> None:
    pool = chosen_port_pool(ephemeral_port_range())[-100:]
    sock_list = []
    try:
        for port in pool:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
                sock_list.append(sock)
            except OSError:
                sock.close()
        with pytest.raises(RuntimeError, match="free ports"):
            free_ports(1, pool=pool)
    finally:
        for sock in sock_list:
            sock.close()


def test_range_file_parsing(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("20000\t45000\n")
    assert ephemeral_port_range(f) == (20000, 45000)
    assert ephemeral_port_range(tmp_path / "missing") == (32768, 60999)
    f.write_text("garbage")
    assert ephemeral_port_range(f) == (32768, 60999)
    pool = chosen_port_pool((20000, 45000))
    assert pool[0] == 45001 and pool[-1] == 65535
    # a machine whose ephemeral range covers everything: the kernel chooses
    assert len(chosen_port_pool((1024, 65535))) == 0
    assert free_ports(2, pool=[]) != []


def test_ports_to_avoid_are_not_chosen() -> None:
    pool = chosen_port_pool(ephemeral_port_range())[1000:1100]
    chosen = free_ports(2, pool=pool, avoid=set(pool[:95]))
    assert set(chosen) <= set(pool[95:])


# -- SupervisedProcess: the one class for every child the stack runs ---------------------------------
def test_restart_delay_doubles_to_its_cap():
    from inferstack.process import RestartPolicy, next_restart_delay

    policy = RestartPolicy(initial_s=0.5, max_s=3.0)
    delays, d = [], 0.0
    for _ in range(5):
        d = next_restart_delay(d, policy)
        delays.append(d)
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_supervised_process_heals_with_backoff_by_the_clock_given_and_stops_its_whole_group(tmp_path):
    import sys

    from inferstack.process import RestartPolicy, SupervisedProcess, group_alive

    # the leader starts a child in its own group, then exits at once: heal must restart it
    code = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    proc = SupervisedProcess("flaky", [sys.executable, "-c", code], tmp_path / "flaky.log",
                             restart=RestartPolicy(initial_s=1.0, max_s=4.0, stable_after_s=100.0), stop_timeout_s=2)
    proc.start()
    first = proc.pid
    proc.proc.wait()
    t0 = proc.started_at
    assert proc.state == "exited(0)" and group_alive(first)  # the leader is gone, its child is not
    assert proc.heal(now=t0) and proc.restarts == 1 and proc.pid != first  # first restart: at once
    assert not group_alive(first)  # what the dead incarnation left was stopped before the restart
    proc.proc.wait()
    assert not proc.heal(now=t0 + 0.5)  # within 1 s of the first restart
    assert proc.heal(now=t0 + 1.1) and proc.restarts == 2
    proc.proc.wait()
    assert not proc.heal(now=t0 + 2.9) and proc.heal(now=t0 + 3.2)  # then 2 s
    last = proc.pid
    proc.stop()
    assert proc.state == "stopped" and not proc.heal(now=t0 + 100)
    assert not group_alive(last)


def test_output_lines_reach_the_caller_and_the_log_and_stop_interrupts_first(tmp_path):
    import sys
    import time

    from inferstack.process import SupervisedProcess, group_alive

    lines: list[str] = []
    proc = SupervisedProcess("talker", [sys.executable, "-c", "print('one'); print('two')"], tmp_path / "t.log",
                             on_line=lines.append)
    proc.start()
    assert proc.wait() == 0
    assert lines == ["one\n", "two\n"] and (tmp_path / "t.log").read_text() == "one\ntwo\n"

    def started(code: str, interrupt_timeout_s: float) -> tuple[SupervisedProcess, list[str]]:
        seen: list[str] = []
        proc = SupervisedProcess("child", [sys.executable, "-c", code + "; print('ready', flush=True); time.sleep(60)"],
                                 tmp_path / f"{len(code)}.log", on_line=seen.append,
                                 interrupt_timeout_s=interrupt_timeout_s, stop_timeout_s=10)
        proc.start()
        while "ready\n" not in seen:
            assert proc.exit_code() is None
            time.sleep(0.01)
        return proc, seen

    # a child that saves its work on SIGINT (as inference-perf writes its finished stages' reports)
    saver, seen = started("import signal, sys, time\n"
                          "def save(*_): print('saved', flush=True); sys.exit(0)\n"
                          "signal.signal(signal.SIGINT, save)", interrupt_timeout_s=10)
    saver.stop()
    assert saver.proc.returncode == 0 and seen == ["ready\n", "saved\n"]  # SIGINT sufficed

    # one that ignores SIGINT gets SIGTERM once the interrupt's time is up
    deaf, _ = started("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN)", interrupt_timeout_s=0.3)
    began = time.monotonic()
    deaf.stop()
    # the group stop may reap the child before Popen does (Popen then reports 0 for a child it
    # never saw exit): what holds is that it is gone, after the interrupt's time and not much more
    assert deaf.proc.returncode in (-15, 0) and not group_alive(deaf.proc.pid)
    assert 0.3 <= time.monotonic() - began < 10


def test_wait_ready_names_the_exit_and_shows_the_log_tail(tmp_path):
    import sys
    import time

    from inferstack.errors import ReplicaStartError
    from inferstack.process import SupervisedProcess

    proc = SupervisedProcess("broken", [sys.executable, "-c", "print('bad flag --x'); raise SystemExit(3)"],
                             tmp_path / "broken.log")
    proc.start()
    with pytest.raises(ReplicaStartError, match="broken .* exited with code 3") as err:
        proc.wait_ready(lambda: False, time.monotonic() + 30)
    assert "bad flag --x" in err.value.log_tail
    proc.stop()
