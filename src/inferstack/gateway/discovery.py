"""Where the EPP learns its endpoints: a static list, or a JSON file a supervisor rewrites.

    Discovery.run(on_change)   runs until cancelled; calls ``on_change(addresses)`` once at start
                               and again on every change of the endpoint set.

The file is ``{"endpoints": ["127.0.0.1:8101", ...]}``, replaced atomically (write + rename) by its
owner; it is re-read when its mtime (ns) or size changes. A missing or half-written file keeps the
last good set and logs why. The Kubernetes pod watcher lives in ``kube_discovery``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from inferstack.errors import ConfigError
from inferstack.gateway.settings import FileDiscovery, KubernetesDiscovery, StaticDiscovery

__all__ = ["Discovery", "FileWatchDiscovery", "StaticListDiscovery", "make_discovery", "read_endpoints_file",
           "validate_address", "write_endpoints_file"]

log = logging.getLogger(__name__)
OnChange = Callable[[list[str]], None]


def validate_address(address: str, where: str = "endpoint") -> str:
    """Check 'host:port' and return it as 'ip:port': Envoy's override_host matches IP addresses,
    so a host name (``localhost:8101``) is resolved once, here, off the hot path."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where} has value {address!r}; must be 'host:port' with a port in 1..65535")
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
        return address
    except ValueError:
        pass
    try:
        ip = socket.getaddrinfo(bare, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise ConfigError(f"{where} has value {address!r}; host {bare!r} does not resolve: {exc}") from exc
    return f"{ip}:{port}"


def read_endpoints_file(path: Path) -> list[str]:
    data = json.loads(Path(path).read_text())
    eps = data.get("endpoints") if isinstance(data, dict) else None
    if not isinstance(eps, list) or not all(isinstance(e, str) for e in eps):
        raise ValueError(f'{path} must hold {{"endpoints": ["host:port", ...]}}')
    return [validate_address(e, f"{path} endpoints[]") for e in eps]


def write_endpoints_file(path: Path, endpoints: list[str]) -> None:
    """Atomically replace the endpoints file (what a supervisor calls when replicas change)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"endpoints": list(endpoints)}))
    os.replace(tmp, path)


class Discovery:
    async def run(self, on_change: OnChange) -> None:
        raise NotImplementedError


class StaticListDiscovery(Discovery):
    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = [validate_address(e, f"discovery.endpoints[{i}]") for i, e in enumerate(endpoints)]

    async def run(self, on_change: OnChange) -> None:
        on_change(list(self.endpoints))
        await asyncio.Event().wait()


class FileWatchDiscovery(Discovery):
    def __init__(self, path: Path, poll_interval_s: float = 0.2) -> None:
        self.path = Path(path)
        self.poll_interval_s = poll_interval_s
        self._stamp: tuple[int, int] | None = None
        self._current: list[str] | None = None

    def poll(self) -> list[str] | None:
        """Return the new endpoint list if the file changed (and parses), else None."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is not None:
                log.warning("endpoints file %s disappeared; keeping %s", self.path, self._current)
                self._stamp = None
            return [] if self._current is None and self._mark_empty() else None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return None
        try:
            eps = read_endpoints_file(self.path)
        except (ValueError, OSError, ConfigError) as exc:
            log.warning("endpoints file %s unreadable (%s); keeping %s", self.path, exc, self._current)
            return None
        self._stamp = stamp
        if eps == self._current:
            return None
        self._current = eps
        return eps

    def _mark_empty(self) -> bool:
        self._current = []
        return True

    async def run(self, on_change: OnChange) -> None:
        while True:
            eps = self.poll()
            if eps is not None:
                on_change(eps)
            await asyncio.sleep(self.poll_interval_s)


def make_discovery(settings: StaticDiscovery | FileDiscovery | KubernetesDiscovery) -> Discovery:
    if isinstance(settings, StaticDiscovery):
        return StaticListDiscovery(settings.endpoints)
    if isinstance(settings, FileDiscovery):
        return FileWatchDiscovery(settings.path, settings.poll_interval_ms / 1000.0)
    from inferstack.gateway.kube_discovery import KubernetesPodDiscovery

    return KubernetesPodDiscovery(settings)
