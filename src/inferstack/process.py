"""Process and port helpers shared by the supervisor and the gateway runtime.

Every server we start (vLLM, Envoy, EPP) runs in its own session, so its pid is also its process
group id: ``stop_process_group`` signals the whole tree (vLLM's engine core and workers too), and
``group_alive`` says whether anything of it is left, even after the leader died.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import time
from collections.abc import Collection
from pathlib import Path

__all__ = ["group_alive", "log_tail", "pid_alive", "port_is_free", "stop_process_group"]

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


def stop_process_group(pid: int, terminate_timeout_s: float) -> None:
    """SIGTERM the process group led by ``pid``, wait, then SIGKILL what is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + terminate_timeout_s
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return
        time.sleep(0.05)
    log.warning("process group %d ignored SIGTERM for %.1fs; sending SIGKILL", pid, terminate_timeout_s)
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
