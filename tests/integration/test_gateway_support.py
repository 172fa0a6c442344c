"""Helpers of the gateway integration tests (no tests here): echo backends and a Gateway on free ports.

Imported by the other test_gateway_*.py modules. Everything started here is stopped by the
context managers (terminate -> wait -> kill).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from inferstack.batch import BatchService, BatchSettings, DispatchSettings
from inferstack.batch.stack import gateway_with_batch
from inferstack.gateway import EppSettings, Gateway, GatewaySettings
from inferstack.gateway.settings import FlowControlSettings, HoldSettings
from inferstack.process import free_port, free_port_block

ECHO = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway_echo_backend.py"


def wait_until(cond, timeout_s: float = 10.0, what: str = "condition",  # type: ignore[no-untyped-def]
               interval_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def stop_process(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def echo_backends(n: int, models: list[list[str]] | None = None
                  ) -> Iterator[list[tuple[str, subprocess.Popen]]]:  # type: ignore[type-arg]
    """``n`` echo backends; ``models[i]``: what backend i lists at /v1/models (base model first)."""
    procs = []
    try:
        for i in range(n):
            port = free_port()
            extra = ["--models", ",".join(models[i])] if models else []
            proc = subprocess.Popen([sys.executable, str(ECHO), "--port", str(port), *extra],
                                    stdout=subprocess.DEVNULL)
            procs.append((f"127.0.0.1:{port}", proc))
        for addr, _ in procs:
            wait_until(lambda a=addr: _ok(f"http://{a}/health"), what=f"echo backend {addr}")
        yield procs
    finally:
        for _, proc in procs:
            stop_process(proc)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def epp_gauge(gw: Gateway, name: str, endpoint: str | None = None, picker: int = 0, **labels: str) -> float | None:
    """A sample of picker ``picker``'s /metrics: ``name{endpoint="..."}``, ``name{label="..."}`` or plain ``name``."""
    if endpoint is not None:
        labels = {"endpoint": endpoint, **labels}
    selector = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    text = httpx.get(f"http://127.0.0.1:{gw.settings.picker_ports()[picker][1]}/metrics", timeout=2).text
    for line in text.splitlines():
        if line.startswith(f"{name}{selector} "):
            return float(line.rsplit(" ", 1)[1])
    return None


@contextlib.contextmanager
def running_gateway(endpoints: list[str] | None = None, endpoints_file: Path | None = None,
                    run_dir: Path | None = None, failure_mode: str = "closed",
                    hold: HoldSettings | None = None, flow_control: FlowControlSettings | None = None,
                    pickers: int = 1, **epp_kw: object) -> Iterator[Gateway]:
    if pickers == 1:
        grpc_port, metrics_port = free_port(), free_port()
    else:  # picker i on each + i
        grpc_port = free_port_block(2 * pickers, start=26000)  # metrics on the block's second half
        metrics_port = grpc_port + pickers
    epp = EppSettings(grpc_port=grpc_port, metrics_port=metrics_port, **epp_kw)  # type: ignore[arg-type]
    settings = GatewaySettings(port=free_port(), admin_port=free_port(), epp=epp, hold=hold or HoldSettings(),
                               flow_control=flow_control or FlowControlSettings(), pickers=pickers,
                               epp_failure_mode=failure_mode)  # type: ignore[arg-type]
    gw = Gateway(settings, endpoints=endpoints, endpoints_file=endpoints_file, run_dir=run_dir)
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


@contextlib.contextmanager
def gateway_and_batch_service(run_dir: Path, endpoints: list[str], epp: dict[str, object],
                              batch: dict[str, object]) -> Iterator[tuple[Gateway, BatchService]]:
    """Envoy + EPP (``epp``: more EppSettings) routing /v1/files and /v1/batches to a batch service
    (``batch``: more BatchSettings) whose lines go back through the gateway; both ready, endpoints scraped."""
    gw_settings = GatewaySettings(port=free_port(), admin_port=free_port(), epp=EppSettings(
        grpc_port=free_port(), metrics_port=free_port(), **epp))  # type: ignore[arg-type]
    settings = BatchSettings(port=free_port(), state_dir=run_dir / "batch", poll_interval_s=0.05,  # type: ignore[arg-type]
                             gateway_url=f"http://127.0.0.1:{gw_settings.port}",
                             **{"dispatch": DispatchSettings(backoff_initial_s=0.05, backoff_max_s=0.5), **batch})
    gw = Gateway(gateway_with_batch(gw_settings, settings), endpoints=endpoints, run_dir=run_dir / "gw")
    svc = BatchService(settings, run_dir=run_dir / "svc")
    try:
        gw.start()
        svc.start()
        wait_ready(gw, endpoints)
        yield gw, svc
    finally:
        svc.stop()
        gw.stop()


def wait_ready(gw: Gateway, endpoints: list[str]) -> None:
    """Wait until each picker has scraped each endpoint (its own /metrics says ready)."""
    for picker in range(gw.settings.pickers):
        for ep in endpoints:
            wait_until(lambda e=ep, p=picker: epp_gauge(gw, "inferstack_epp_endpoint_ready", e, picker=p) == 1.0,
                       what=f"picker {picker} to see {ep} ready")


def routed_counts(gw: Gateway, picker: int = 0) -> dict[str, float]:
    """Requests picker ``picker`` routed, by endpoint (summed over models), from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{gw.settings.picker_ports()[picker][1]}/metrics", timeout=2).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("inferstack_epp_requests_total{") and 'outcome="routed"' in line:
            ep = line.split('endpoint="', 1)[1].split('"', 1)[0]
            out[ep] = out.get(ep, 0.0) + float(line.rsplit(" ", 1)[1])
    return out
