"""Process and port helpers shared by the supervisor, the gateway and the batch service.

``SupervisedProcess`` is the one class for every child we run (a vLLM replica, Envoy, the picker,
the batch service, inference-perf): start in its own session with its output appended to a log
(and, with ``on_line``, each line handed to the caller as it comes), wait until ready (a clear
error with the log tail when it exits or is too slow), heal (restart after an exit, the delay
doubling from ``RestartPolicy.initial_s`` to ``max_s`` and reset once it has run
``stable_after_s``), stop the whole process group (SIGINT first where the child saves its work on
it, then SIGTERM, wait, SIGKILL), report its status.
Its pid is its process group id, so ``stop_process_group`` signals the whole tree (vLLM's engine
core and workers too), and ``group_alive`` says whether anything of it is left.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferstack.errors import ReplicaStartError

__all__ = ["RestartPolicy", "SupervisedProcess", "group_alive", "log_tail", "next_restart_delay", "pid_alive",
           "port_is_free", "stop_process_group"]

log = logging.getLogger(__name__)


def pid_alive(pid: int | None) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its parent) does not."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group led by ``pgid`` still runs (the leader may be gone).

    Zombies do not count: a supervisor detached by `up --detach` is reparented, and its exit
    stays visible to ``killpg`` until its new parent reaps it."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # reap the leader if it is our own child
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _signal_and_wait(pid: int, sig: signal.Signals, timeout_s: float) -> bool:
    """Send ``sig`` to the group and wait up to ``timeout_s`` for it to end; True when it has (a
    Ctrl-C while waiting ends the wait: the caller escalates)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not group_alive(pid):
                return True
            time.sleep(0.05)
    except KeyboardInterrupt:
        log.warning("interrupted while process group %d handled %s; escalating", pid, sig.name)
        return False
    log.warning("process group %d still runs %.1fs after %s; escalating", pid, timeout_s, sig.name)
    return False


def stop_process_group(pid: int, terminate_timeout_s: float, interrupt_timeout_s: float = 0.0) -> None:
    """SIGINT the process group led by ``pid`` and wait (when ``interrupt_timeout_s``), SIGTERM and
    wait, then SIGKILL what is left."""
    if interrupt_timeout_s > 0 and _signal_and_wait(pid, signal.SIGINT, interrupt_timeout_s):
        return
    if _signal_and_wait(pid, signal.SIGTERM, terminate_timeout_s):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while group_alive(pid):
        time.sleep(0.05)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a (possibly large) log file; "" if it cannot be read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (with SO_REUSEADDR, as servers do, so
    connections of a previous run in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# Ports the kernel hands out by itself (outgoing connections, vLLM's torch-distributed and ZMQ
# ports, anything bound to port 0) come from this range; a port chosen inside it and bound a minute
# later (the batch API once the replicas are ready) can be taken by then, so we choose outside it.
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Chosen ports start here: replicas take consecutive ports below (free_port_block, 18100..30000).
CHOSEN_PORTS_START = 30000


class _Chosen:
    """This process's walk over the pool: where it stands and what it handed out."""

    cursor: int | None = None
    handed_out: set[int] = set()


def ephemeral_port_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux's default when it cannot be read)."""
    try:
        low, high = (int(v) for v in path.read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def chosen_port_pool(ephemeral: tuple[int, int]) -> list[int]:
    """Ports ``free_ports`` may choose: CHOSEN_PORTS_START..65535 less the ephemeral range."""
    low, high = ephemeral
    return [p for p in range(CHOSEN_PORTS_START, 65536) if not low <= p <= high]


def free_ports(count: int, host: str = "127.0.0.1", pool: list[int] | None = None,
               avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct ports that are free now, outside the kernel's ephemeral range (so no
    connection or port-0 bind takes them before our server binds), none handed out before by this
    process nor in ``avoid`` (ports configured for servers that have not bound yet); all held
    open while choosing. Walks the pool from a random start, as the kernel does,
    so two processes choosing at once rarely meet. Without room outside the ephemeral range
    (a machine configured so) the kernel chooses."""
    pool = chosen_port_pool(ephemeral_port_range()) if pool is None else pool
    if len(pool) < 64:
        return _kernel_ports(count, host)
    if _Chosen.cursor is None:
        _Chosen.cursor = random.randrange(len(pool))
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(len(pool)):
            if len(ports) == count:
                break
            port = pool[_Chosen.cursor % len(pool)]
            _Chosen.cursor += 1
            if port in _Chosen.handed_out or port in avoid:
                continue
            sock = socket.socket()
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            socks.append(sock)
            ports.append(port)
    finally:
        for sock in socks:
            sock.close()
    if len(ports) < count:
        raise RuntimeError(f"no {count} free ports in {pool[0]}..{pool[-1]} outside the ephemeral range")
    _Chosen.handed_out.update(ports)
    return ports


def _kernel_ports(count: int, host: str) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    return free_ports(1, host, avoid=avoid)[0]


def free_port_block(count: int, start: int = 18100, end: int = 30000, host: str = "127.0.0.1") -> int:
    """The first port P >= ``start`` with P .. P+count-1 all free (replicas take consecutive ports)."""
    for port in range(start, end - count, count):
        if all(port_is_free(host, port + i) for i in range(count)):
            return port
    raise RuntimeError(f"no {count} consecutive free ports in {start}..{end}")


@dataclass(frozen=True)
class RestartPolicy:
    initial_s: float = 0.5  # first restart delay
    max_s: float = 30.0  # the delay doubles up to this
    stable_after_s: float = 60.0  # a process up this long starts again from initial_s


def next_restart_delay(previous_s: float, policy: RestartPolicy) -> float:
    """The delay before the next restart, given the one before (0: none yet)."""
    return min(policy.max_s, previous_s * 2 if previous_s else policy.initial_s)


class SupervisedProcess:
    """One child process we run and watch (see the module docstring)."""

    def __init__(self, name: str, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cores: Collection[int] = (), stop_timeout_s: float = 10.0,
                 restart: RestartPolicy = RestartPolicy(), cwd: Path | None = None,
                 on_line: Callable[[str], None] | None = None, interrupt_timeout_s: float = 0.0) -> None:
        self.name = name
        self.argv = argv
        self.log_path = Path(log_path)
        self.env = env
        self.cores = set(cores)
        self.stop_timeout_s = stop_timeout_s
        self.cwd = cwd
        self.on_line = on_line  # each output line as it comes (the log gets it too)
        self.interrupt_timeout_s = interrupt_timeout_s  # SIGINT first on stop, this long
        self._pump: threading.Thread | None = None
        self.restart = restart
        # the current (or, once stopped, the last) incarnation; its output is text with ``on_line``
        self.proc: subprocess.Popen[Any] | None = None
        self.stopped = True  # by stop() (or never started): not to be healed
        self.started_at = 0.0  # monotonic, of the current incarnation
        self.restarts = 0
        self._delay_s = 0.0
        self._retry_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Spawn it (OSError when the program cannot be run)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cores = self.cores

        def pin() -> None:  # in the child, before exec
            if cores:
                os.sched_setaffinity(0, cores)

        if self.on_line is None:
            with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
                self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log_file,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True, preexec_fn=pin if cores else None)
        else:
            piped: subprocess.Popen[str] = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True,
                preexec_fn=pin if cores else None)
            self.proc = piped
            self._pump = threading.Thread(target=self._copy_lines, args=(piped, self.on_line),
                                          name=f"{self.name}-output", daemon=True)
            self._pump.start()
        self.stopped = False
        self.started_at = time.monotonic()
        log.info("%s started, pid %d", self.name, self.proc.pid)

    def _copy_lines(self, proc: subprocess.Popen[str], on_line: Callable[[str], None]) -> None:
        assert proc.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log_file:
            for line in proc.stdout:
                log_file.write(line)
                log_file.flush()
                on_line(line)

    def wait(self) -> int:
        """Until it exits (its output all handed over); its exit code."""
        assert self.proc is not None, "start() first"
        code = self.proc.wait()
        if self._pump is not None:
            self._pump.join(timeout=10)
        return code

    def exit_code(self) -> int | None:
        """Its exit code once it has exited (and been reaped), else None."""
        return None if self.proc is None else self.proc.poll()

    @property
    def state(self) -> str:
        if self.proc is None or self.stopped:
            return "stopped"
        code = self.proc.poll()
        return "running" if code is None else f"exited({code})"

    def wait_ready(self, ready: Callable[[], bool], deadline: float, poll_s: float = 0.05) -> None:
        """Until ``ready()`` (monotonic ``deadline``); ReplicaStartError with the log tail when the
        process exits first or the deadline passes."""
        assert self.proc is not None, "start() first"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ReplicaStartError(f"{self.name} (pid {self.proc.pid}) exited with code {self.proc.returncode} "
                                        f"while starting; log: {self.log_path}", log_tail(self.log_path))
            if ready():
                log.info("%s pid %d is ready", self.name, self.proc.pid)
                return
            time.sleep(poll_s)
        raise ReplicaStartError(f"{self.name} (pid {self.proc.pid}) not ready after "
                                f"{time.monotonic() - self.started_at:.0f} s; log: {self.log_path}",
                                log_tail(self.log_path))

    def heal(self, now: float | None = None) -> bool:
        """Restart it if it exited and its delay has passed (without waiting for readiness: the
        caller polls again); True when it was restarted now."""
        if self.proc is None or self.stopped:
            return False
        now = time.monotonic() if now is None else now
        if self.proc.poll() is None:
            if now - self.started_at > self.restart.stable_after_s:
                self._delay_s = 0.0
            return False
        if now < self._retry_at:
            return False
        log.warning("%s pid %d exited with code %s; restarting it (log: %s)", self.name, self.proc.pid,
                    self.proc.returncode, self.log_path)
        if group_alive(self.proc.pid):  # what the dead incarnation left (vLLM's engine core) goes first
            stop_process_group(self.proc.pid, self.stop_timeout_s)
        self.restarts += 1
        self._delay_s = next_restart_delay(self._delay_s, self.restart)
        self._retry_at = now + self._delay_s
        try:
            self.start()
        except OSError as exc:
            log.error("cannot restart %s: %s; next try in %.1fs", self.name, exc, self._delay_s)
            return False
        return True

    def stop(self) -> None:
        """SIGINT its whole process group and wait ``interrupt_timeout_s`` (when set), SIGTERM and wait
        ``stop_timeout_s``, SIGKILL what is left."""
        proc = self.proc
        if proc is None or self.stopped:
            return
        self.stopped = True
        stop_process_group(proc.pid, self.stop_timeout_s, self.interrupt_timeout_s)
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        if self._pump is not None:
            self._pump.join(timeout=10)
        log.info("%s pid %d stopped (code %s)", self.name, proc.pid, proc.returncode)
