"""Choosing ports: outside the kernel's ephemeral range, distinct, free, never handed out twice."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from inferstack.process import (
    CHOSEN_PORTS_START,
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


def test_a_bound_port_is_skipped() -> None:
    pool = chosen_port_pool(ephemeral_port_range())[:200]
    holders = []
    try:
        # bind every port of a small pool but the last 3: only those can be chosen
        for port in pool[:-3]:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            holders.append(sock)
        held = {s.getsockname()[1] for s in holders}
        chosen = free_ports(1, pool=pool)
        assert chosen[0] not in held
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
