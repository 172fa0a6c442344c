"""Gateway overhead: added latency (p50/p99) and max requests/s of Envoy + EPP vs a direct connection.

Setup (as the issue asks): the echo backend (``gateway_echo_backend.py``) pinned to CPU 0; Envoy,
the EPP (full default scheduler: queue + kv-cache + prefix) and this load generator on CPU 1.
Closed-loop clients over keep-alive HTTP/1.1 connections send small ``/v1/chat/completions``
requests for ``--duration`` seconds per (target, concurrency); same run, same machine, so the
numbers to read are the differences and ratios, printed as a table (and JSON with ``--json``).

    .venv/bin/python benchmarks/gateway_overhead.py [--duration 5] [--clients 1,10,100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from inferstack.gateway import EppSettings, Gateway, GatewaySettings
from inferstack.process import free_port

ROOT = Path(__file__).resolve().parent


def _request(port: int, i: int) -> bytes:
    body = json.dumps({"model": "echo", "max_tokens": 8,
                       "messages": [{"role": "user", "content": f"hello {i % 50} " + "x" * 200}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % (port, len(body))) + body


class _Client(asyncio.Protocol):
    """One keep-alive connection; resolves ``done`` when a full response (content-length) arrived."""

    def __init__(self) -> None:
        self.buf = b""
        self.done: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].lower()
        i = head.find(b"content-length:")
        length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None]) if i >= 0 else 0
        if len(self.buf) >= end + 4 + length:
            status = int(self.buf[9:12])
            self.buf = self.buf[end + 4 + length:]
            if self.done is not None and not self.done.done():
                self.done.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("connection closed"))


async def _run(port: int, clients: int, duration_s: float) -> dict:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def worker(w: int) -> None:
        nonlocal errors
        _, proto = await loop.create_connection(_Client, "127.0.0.1", port)
        reqs = [_request(port, w * 1000 + k) for k in range(50)]
        k = 0
        while time.perf_counter() < stop_at:
            proto.done = loop.create_future()
            t0 = time.perf_counter()
            proto.transport.write(reqs[k % 50])  # type: ignore[union-attr]
            status = await proto.done
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
            k += 1
        proto.transport.close()  # type: ignore[union-attr]

    # warm-up: connections, Envoy's upstream pool, the EPP's code paths
    stop_at = time.perf_counter() + 0.5
    await asyncio.gather(*(worker(w) for w in range(clients)))
    latencies.clear()
    errors = 0
    started = time.perf_counter()
    stop_at = started + duration_s
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - started
    lat = sorted(latencies)
    return {"clients": clients, "requests": len(lat), "errors": errors, "rps": len(lat) / elapsed,
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "mean_ms": 1000 * statistics.fmean(lat)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--clients", default="1,10,100", help="comma-separated concurrencies")
    ap.add_argument("--picker", default="max-score", choices=["max-score", "round-robin", "random"])
    ap.add_argument("--server", default="h2", choices=["h2", "grpcio"], help="the EPP's gRPC transport")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    ncpu = os.cpu_count() or 1
    backend_cpu, gateway_cpu = ({0}, {1}) if ncpu >= 2 else ({0}, {0})
    backend_port = free_port()
    backend = subprocess.Popen([sys.executable, str(ROOT / "gateway_echo_backend.py"), "--port", str(backend_port)],
                               stdout=subprocess.DEVNULL)
    os.sched_setaffinity(backend.pid, backend_cpu)
    os.sched_setaffinity(0, gateway_cpu)
    epp = EppSettings(grpc_port=free_port(), metrics_port=free_port())
    epp.scheduler.picker = args.picker
    epp.server = args.server
    settings = GatewaySettings(port=free_port(), admin_port=free_port(), epp=epp)
    gw = Gateway(settings, endpoints=[f"127.0.0.1:{backend_port}"])
    results: dict[str, list[dict]] = {"direct": [], "gateway": []}
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{backend_port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        gw.start()
        for name in ("envoy", "epp"):
            os.sched_setaffinity(gw.status()[name]["pid"], gateway_cpu)
        time.sleep(0.5)  # first scrapes
        for n in (int(c) for c in args.clients.split(",")):
            for target, port in (("direct", backend_port), ("gateway", settings.port)):
                r = asyncio.run(_run(port, n, args.duration))
                results[target].append(r)
                print(f"{target:8s} clients={n:4d} rps={r['rps']:8.0f} p50={r['p50_ms']:.3f}ms "
                      f"p99={r['p99_ms']:.3f}ms errors={r['errors']}", flush=True)
    finally:
        gw.stop()
        backend.terminate()
        backend.wait()
    print(f"\nGateway overhead (picker {args.picker}, EPP transport {args.server}; backend on CPU {sorted(backend_cpu)}, "
          f"Envoy+EPP+load generator on CPU {sorted(gateway_cpu)}):")
    print(f"{'clients':>7} {'added p50 ms':>12} {'added p99 ms':>12} {'direct rps':>10} {'gateway rps':>11} {'ratio':>6}")
    for d, g in zip(results["direct"], results["gateway"]):
        print(f"{d['clients']:>7} {g['p50_ms'] - d['p50_ms']:>12.3f} {g['p99_ms'] - d['p99_ms']:>12.3f} "
              f"{d['rps']:>10.0f} {g['rps']:>11.0f} {g['rps'] / d['rps']:>6.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
