"""Gateway overhead: added latency (p50/p99) and req/s of Envoy + EPP vs a direct connection and two baselines.

Absolute figures move a lot between machines, so one run measures, per client count and on the
same CPUs, five variants one after the other (never two at once; each variant's processes are
started, measured at every client count, then stopped before the next starts):
- ``direct``: the echo backend (``gateway_echo_backend.py``) itself;
- ``envoy_static`` (a): Envoy alone: the bootstrap our ``Gateway`` writes (``build_envoy_config``)
  with the ext_proc filter (and anything else calling the EPP, and the Lua filter) removed and the pool an ordinary
  STATIC cluster holding the backend (``static_route_config``): the cost of the data plane;
- ``envoy_static_lua`` (a'): (a) with the gateway's Lua filter kept (response headers, usage): its cost;
- ``minimal_grpcio`` (b): Envoy on exactly the bootstrap our ``Gateway`` writes (EDS file,
  ``override_host``), its ext_proc (``epp``) cluster at ``minimal_grpcio_epp.py``, a grpcio
  ext_proc server that only sets the destination: the cost of a plain Python picker;
- ``gateway``: our ``Gateway`` (Envoy + our EPP, full default scheduler unless ``--picker``);
- ``gateway_precise`` (with ``--precise``): the same with KV events on and the precise-prefix
  profile: every request tokenized as the engine would (the bundled model's tokenizer; no replica
  publishes events here, so the index stays empty: the cost measured is the picker's own).
Added latency is a variant's p50/p99 minus direct's at the same client count. Issue 8's targets
compare the full EPP with (b): added p50 at 1 client <= 0.6x (b)'s, req/s at 10 clients >= 3x (b)'s;
issue 22's, the precise profile's added p50 at 1 client <= 1.2x the full (approximate) EPP's.
``--shared-prefix`` makes every request one chat whose message is the same ~``--prompt-bytes``
text (sentences, like a long system prompt or document) with its own question at the end.

CPU pinning: the echo backend on CPU 0; Envoy, the ext_proc servers (ours and the minimal one)
and this load generator on CPU 1 (the first and second CPU this process may use; both on one CPU
if only one is allowed). Children inherit this process's pinning, and every thread of each
started process is pinned again once it is ready. Closed-loop clients over keep-alive HTTP/1.1
connections send small ``/v1/chat/completions`` requests for ``--duration`` seconds per (variant,
client count), after a 0.5 s warm-up.
Invariant: every process this benchmark starts is stopped (terminate -> wait -> kill) when its
variant is done, on an error, on Ctrl-C and on SIGTERM; logs stay in the printed run directory.

    .venv/bin/python benchmarks/gateway_overhead.py [--duration 5] [--clients 1,10,100] [--json out.json] \
        [--prompt-bytes 200,20000,220000] [--precise --shared-prefix]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import yaml

from inferstack.gateway import EppSettings, Gateway, GatewaySettings
from inferstack.gateway.envoy_config import CLUSTER_NAME
from inferstack.gateway.runtime import envoy_binary
from inferstack.process import free_ports, log_tail

__all__ = ["TARGETS", "VARIANTS", "format_report", "main", "static_route_config", "summarize"]

ROOT = Path(__file__).resolve().parent
VARIANTS = ("direct", "envoy_static", "envoy_static_lua", "minimal_grpcio", "gateway")
LABELS = {"direct": "direct (echo backend)", "envoy_static": "(a) Envoy, static route",
          "envoy_static_lua": "(a') (a) + our Lua filter",
          "minimal_grpcio": "(b) Envoy + minimal grpcio", "gateway": "Envoy + our EPP (full)",
          "gateway_precise": "Envoy + our EPP, precise"}
PRECISE_SCORERS = [{"type": "precise-prefix", "weight": 2}, {"type": "no-hit-lru"}, {"type": "queue"}, {"type": "kv-cache"}]
PRECISE_BOUND = 1.2  # issue 22: precise added p50 at 1 client / the full EPP's
WARMUP_S = 0.5
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
SERVER_CHOICES = typing.get_args(EppSettings.model_fields["server"].annotation)
PICKER_CHOICES = typing.get_args(EppSettings.model_fields["scheduler"].annotation.model_fields["picker"].annotation)


class Target(typing.NamedTuple):
    """``gateway``'s metric / ``minimal_grpcio``'s at ``clients``, compared with ``bound`` by ``op``."""
    name: str
    clients: int
    metric: str  # a key of a result row: "added_p50_ms" or "rps"
    op: str      # "<=" or ">="
    bound: float


TARGETS = (
    Target("full EPP added p50 at 1 client / minimal grpcio's", 1, "added_p50_ms", "<=", 0.6),
    Target("full EPP req/s at 10 clients / minimal grpcio's", 10, "rps", ">=", 3.0),
)


# ---------------------------------------------------------------------------------------------
# the load generator


_SENTENCES = "".join(f"Shelf {i} holds {i % 5} red boxes and {i % 7} blue ones. " for i in range(10_000))


def _request(port: int, i: int, prompt_bytes: int = 200, shared_prefix: bool = False) -> bytes:
    content = (f"{_SENTENCES[:prompt_bytes]} Question {i}: which shelf holds most?" if shared_prefix
               else f"hello {i % 50} " + "x" * prompt_bytes)
    body = json.dumps({"model": "echo", "max_tokens": 8, "messages": [{"role": "user", "content": content}]}).encode()
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


async def _run(port: int, clients: int, duration_s: float, prompt_bytes: int = 200,
               shared_prefix: bool = False) -> dict:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def worker(w: int) -> None:
        nonlocal errors
        _, proto = await loop.create_connection(_Client, "127.0.0.1", port)
        reqs = [_request(port, w * 1000 + k, prompt_bytes) for k in range(50)]
        k = 0
        while time.perf_counter() < stop_at:
            # a shared prefix: every question its own (a picker keeping tokens must not see a repeat)
            raw = _request(port, w * 10**7 + k, prompt_bytes, True) if shared_prefix else reqs[k % 50]
            proto.done = loop.create_future()
            t0 = time.perf_counter()
            proto.transport.write(raw)  # type: ignore[union-attr]
            status = await proto.done
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
            k += 1
        proto.transport.close()  # type: ignore[union-attr]

    # warm-up: connections, Envoy's upstream pool, the ext_proc server's code paths
    stop_at = time.perf_counter() + WARMUP_S
    await asyncio.gather(*(worker(w) for w in range(clients)))
    latencies.clear()
    errors = 0
    started = time.perf_counter()
    stop_at = started + duration_s
    await asyncio.gather(*(worker(w) for w in range(clients)))
    elapsed = time.perf_counter() - started
    lat = sorted(latencies)
    return {"clients": clients, "prompt_bytes": prompt_bytes, "requests": len(lat), "errors": errors,
            "rps": len(lat) / elapsed,
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "mean_ms": 1000 * statistics.fmean(lat)}


# ---------------------------------------------------------------------------------------------
# the baselines' Envoy config


def _grpc_cluster(node: object) -> str | None:
    """The cluster of an ``envoy_grpc`` service this dict holds directly, if any."""
    ref = node.get("envoy_grpc") if isinstance(node, dict) else None
    return ref.get("cluster_name") if isinstance(ref, dict) else None


def _references(node: object, clusters: set[str]) -> bool:
    if isinstance(node, dict):
        return _grpc_cluster(node) in clusters or any(_references(v, clusters) for v in node.values())
    return isinstance(node, list) and any(_references(v, clusters) for v in node)


def _prune(node: object, clusters: set[str]) -> None:
    """Remove the innermost list items (a filter, an access logger) that call one of ``clusters``."""
    if isinstance(node, dict):
        for v in node.values():
            _prune(v, clusters)
    elif isinstance(node, list):
        for v in node:  # inside first, so a listener loses its ext_proc filter, not itself
            _prune(v, clusters)
        node[:] = [v for v in node if not _references(v, clusters)]


def static_route_config(config: dict, backend: str, keep_lua: bool = False) -> dict:
    """The gateway's Envoy bootstrap ``config`` as plain Envoy: the ext_proc filter and everything
    else that calls its gRPC cluster (an access log to the EPP) removed, that cluster removed, the
    Lua filter that carries the picker's response headers and usage removed (unless ``keep_lua``), the
    pool a STATIC cluster holding only ``backend`` ("host:port"). Listener, route, retries,
    timeouts, buffer limits and circuit breakers stay the gateway's. ``config`` is not changed.
    ValueError if the config does not have the shape this relies on."""
    cfg = copy.deepcopy(config)
    ext_proc_clusters = set()
    for listener in cfg["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for net_filter in chain["filters"]:
                for f in net_filter.get("typed_config", {}).get("http_filters", []):
                    if ".ext_proc." in f.get("typed_config", {}).get("@type", ""):
                        ext_proc_clusters.add(_grpc_cluster(f["typed_config"]["grpc_service"]))
    if not ext_proc_clusters:
        raise ValueError("the gateway's Envoy config has no ext_proc filter to remove; "
                         "static_route_config must follow build_envoy_config's new shape")
    _prune(cfg["static_resources"]["listeners"], ext_proc_clusters)
    for listener in cfg["static_resources"]["listeners"]:  # the Lua filter serves the picker: ours too
        for chain in listener["filter_chains"]:
            for net_filter in chain["filters"]:
                hcm = net_filter.get("typed_config", {})
                if "http_filters" in hcm and not keep_lua:
                    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.lua"]
    if _references(cfg, ext_proc_clusters):
        raise ValueError(f"the gateway's Envoy config still calls {sorted(ext_proc_clusters)} outside a list "
                         "static_route_config can prune; it must follow build_envoy_config's new shape")
    clusters = [c for c in cfg["static_resources"]["clusters"] if c["name"] not in ext_proc_clusters]
    pools = [c for c in clusters if c["name"] == CLUSTER_NAME]
    if len(pools) != 1:
        raise ValueError(f"the gateway's Envoy config has {len(pools)} clusters named {CLUSTER_NAME!r}; expected 1")
    pool = pools[0]
    for key in ("eds_cluster_config", "load_balancing_policy", "lb_policy"):
        pool.pop(key, None)  # EDS and override_host only make sense with a picker
    host, _, port = backend.rpartition(":")
    pool["type"] = "STATIC"
    pool["load_assignment"] = {"cluster_name": CLUSTER_NAME, "endpoints": [{"lb_endpoints": [{"endpoint": {
        "address": {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}}}]}]}
    cfg["static_resources"]["clusters"] = clusters
    return cfg


# ---------------------------------------------------------------------------------------------
# processes


def _pin_threads(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` (sched_setaffinity on a pid moves only its main thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT_S} s; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def _wait_ready(name: str, proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} (pid {proc.pid}) exited with code {proc.returncode} while starting; "
                               f"log {log}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} (pid {proc.pid}) not ready after {READY_TIMEOUT_S} s; log {log}:\n"
                               f"{log_tail(log)}")
        time.sleep(0.05)


@contextlib.contextmanager
def _process(name: str, argv: list[str], cpus: set[int], run_dir: Path,
             ready: Callable[[], bool]) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` pinned to ``cpus`` in its own session (a Ctrl-C reaches only us; we stop it),
    wait until ``ready()``, yield it, stop it."""
    log = run_dir / f"{name}.log"
    # children inherit our pinning; only a process for other CPUs (the backend) needs a pre-exec hook
    pin = None if cpus == os.sched_getaffinity(0) else functools.partial(os.sched_setaffinity, 0, cpus)
    with open(log, "ab") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=pin)
    try:
        _wait_ready(name, proc, log, ready)
        _pin_threads(proc.pid, cpus)
        yield proc
    finally:
        _stop(proc)


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _grpc_serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=0.5) == b"\x08\x01"
        except grpc.RpcError:
            return False


def _envoy(name: str, config: Path, settings: GatewaySettings, cpus: set[int],
           run_dir: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """Envoy on the bootstrap file ``config`` with the flags the gateway's runtime gives it."""
    argv = [str(envoy_binary()), "-c", str(config), "--disable-hot-restart", "--concurrency", str(settings.concurrency),
            "--log-level", "warn"]
    return _process(name, argv, cpus, run_dir, lambda: _http_ok(f"http://127.0.0.1:{settings.admin_port}/ready"))


def _gateway_settings(picker: str, server: str | None, precise_dir: Path | None = None) -> GatewaySettings:
    """``precise_dir``: KV events on (their sockets there) with the precise-prefix profile."""
    port, admin_port, grpc_port, metrics_port = free_ports(4)
    epp: dict[str, object] = {"grpc_port": grpc_port, "metrics_port": metrics_port, "scheduler": {"picker": picker}}
    if server is not None:
        epp["server"] = server
    if precise_dir is not None:
        from inferstack.models.bundled import BUNDLED
        if not BUNDLED.is_prepared():
            raise SystemExit("--precise tokenizes with the bundled model's tokenizer: run `make setup` first")
        precise_dir.mkdir(parents=True, exist_ok=True)
        epp["scheduler"] = {"picker": picker, "scorers": PRECISE_SCORERS}
        epp["kv_events"] = {"enabled": True, "tokenizer": str(BUNDLED.folder), "ipc_dir": str(precise_dir)}
    return GatewaySettings(port=port, admin_port=admin_port, epp=EppSettings.model_validate(epp))


def _gateway_envoy_config(settings: GatewaySettings, backend: str, run_dir: Path) -> Path:
    """Write the Envoy bootstrap our ``Gateway`` would run with ``settings`` (and its EDS file,
    listing the backend) into ``run_dir``; nothing is started."""
    _, envoy_yaml = Gateway(settings, endpoints=[backend], run_dir=run_dir).write_configs()
    return envoy_yaml


def _start_variant(variant: str, stack: contextlib.ExitStack, backend: str, cpus: set[int], run_dir: Path,
                   picker: str, server: str | None) -> int:
    """Start ``variant``'s processes (stopped when ``stack`` closes); returns the port to load."""
    if variant == "direct":
        return int(backend.rpartition(":")[2])
    variant_dir = run_dir / variant
    settings = _gateway_settings(picker, server, variant_dir / "kv" if variant == "gateway_precise" else None)
    if variant in ("envoy_static", "envoy_static_lua"):
        gateway_yaml = _gateway_envoy_config(settings, backend, variant_dir)
        config = variant_dir / f"{variant}.yaml"
        config.write_text(yaml.safe_dump(static_route_config(yaml.safe_load(gateway_yaml.read_text()), backend,
                                                             keep_lua=variant == "envoy_static_lua"), sort_keys=False))
        stack.enter_context(_envoy(variant, config, settings, cpus, variant_dir))
    elif variant == "minimal_grpcio":
        grpc_port = settings.epp.grpc_port  # the gateway's config sends ext_proc here: to the minimal server
        stack.enter_context(_process(
            "minimal_grpcio_epp", [sys.executable, str(ROOT / "minimal_grpcio_epp.py"), "--port", str(grpc_port),
                                   "--destination", backend], cpus, run_dir, lambda: _grpc_serving(grpc_port)))
        config = _gateway_envoy_config(settings, backend, variant_dir)
        stack.enter_context(_envoy("envoy_minimal", config, settings, cpus, variant_dir))
    elif variant in ("gateway", "gateway_precise"):
        gw = Gateway(settings, endpoints=[backend], run_dir=variant_dir)
        stack.callback(gw.stop)
        gw.start()
        status = gw.status()
        for pid in (status.envoy.pid, status.epp.pid):
            assert pid is not None, "the gateway reported no pid for a process it started"
            _pin_threads(pid, cpus)
        time.sleep(0.5)  # the EPP's first scrapes of the backend's /metrics
    else:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return settings.port


# ---------------------------------------------------------------------------------------------
# report


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den <= 0 else num / den


def summarize(results: dict[str, list[dict]]) -> dict:
    """Add ``added_p50_ms``/``added_p99_ms`` (vs direct at the same client count) to every non-direct
    row of ``results`` (in place) and return ``{"ratios": [...], "targets": [...]}``: per client count
    the full EPP over the minimal grpcio processor, and each of ``TARGETS`` with ``met`` (None when
    not measured or a denominator is <= 0, e.g. the baseline's added latency is within noise)."""
    direct = {r["clients"]: r for r in results.get("direct", [])}
    for variant, rows in results.items():
        for r in rows:
            d = direct.get(r["clients"])
            if variant != "direct" and d is not None:
                r["added_p50_ms"] = r["p50_ms"] - d["p50_ms"]
                r["added_p99_ms"] = r["p99_ms"] - d["p99_ms"]
    full = {r["clients"]: r for r in results.get("gateway", [])}
    minimal = {r["clients"]: r for r in results.get("minimal_grpcio", [])}
    ratios = [{"clients": n,
               "added_p50": _ratio(full[n].get("added_p50_ms"), minimal[n].get("added_p50_ms")),
               "added_p99": _ratio(full[n].get("added_p99_ms"), minimal[n].get("added_p99_ms")),
               "rps": _ratio(full[n]["rps"], minimal[n]["rps"])}
              for n in sorted(full) if n in minimal]
    targets = []
    for t in TARGETS:
        f, m = full.get(t.clients), minimal.get(t.clients)
        value = _ratio(f.get(t.metric), m.get(t.metric)) if f is not None and m is not None else None
        met = None if value is None else (value <= t.bound if t.op == "<=" else value >= t.bound)
        errors = sum(r.get("errors", 0) for r in (f, m, direct.get(t.clients)) if r is not None)
        targets.append({"name": t.name, "clients": t.clients, "metric": t.metric, "op": t.op, "bound": t.bound,
                        "value": value, "met": met, "measured": f is not None and m is not None, "errors": errors})
    precise = {r["clients"]: r for r in results.get("gateway_precise", [])}
    if 1 in precise and 1 in full:
        value = _ratio(precise[1].get("added_p50_ms"), full[1].get("added_p50_ms"))
        targets.append({"name": "precise EPP added p50 at 1 client / full EPP's (issue 22)", "clients": 1,
                        "metric": "added_p50_ms", "op": "<=", "bound": PRECISE_BOUND, "value": value,
                        "met": None if value is None else value <= PRECISE_BOUND, "measured": True,
                        "errors": precise[1].get("errors", 0) + full[1].get("errors", 0)})
    return {"ratios": ratios, "targets": targets}


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_report(results: dict[str, list[dict]], summary: dict, header: str) -> str:
    lines = [header, "",
             f"{'clients':>7}  {'variant':<27} {'p50 ms':>7} {'p99 ms':>7} {'+p50 ms':>8} {'+p99 ms':>8} "
             f"{'req/s':>8} {'vs direct':>9} {'errors':>6}"]
    direct = {r["clients"]: r for r in results.get("direct", [])}
    for n in sorted({r["clients"] for rows in results.values() for r in rows}):
        for variant in (*VARIANTS, "gateway_precise"):
            for r in (r for r in results.get(variant, []) if r["clients"] == n):
                d = direct.get(n)
                lines.append(f"{n:>7}  {LABELS[variant]:<27} {r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} "
                             f"{_fmt(r.get('added_p50_ms'), '.3f'):>8} {_fmt(r.get('added_p99_ms'), '.3f'):>8} "
                             f"{r['rps']:>8.0f} {_fmt(_ratio(r['rps'], d['rps'] if d else None), '.2f'):>9} "
                             f"{r['errors']:>6}")
    if summary["ratios"]:
        lines += ["", "Full EPP / minimal grpcio processor (same run):",
                  f"{'clients':>7} {'added p50':>10} {'added p99':>10} {'req/s':>7}"]
        lines += [f"{r['clients']:>7} {_fmt(r['added_p50'], '.2f'):>10} {_fmt(r['added_p99'], '.2f'):>10} "
                  f"{_fmt(r['rps'], '.2f'):>7}" for r in summary["ratios"]]
    lines += ["", "Targets (issue 8, part 5; issue 22 with --precise):"]
    for t in summary["targets"]:
        verdict = {True: "met", False: "NOT met"}.get(t["met"]) or (
            "no ratio (minimal grpcio's figure is <= 0: within noise)" if t["measured"] else "not measured")
        note = f"  (with {t['errors']} error answers in those measurements)" if t["errors"] else ""
        lines.append(f"  {t['name']}: {_fmt(t['value'], '.2f')} (target {t['op']} {t['bound']}): {verdict}{note}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # unwinds like Ctrl-C: every started process is stopped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--clients", default="1,10,100", help="comma-separated concurrencies")
    ap.add_argument("--picker", default="max-score", choices=PICKER_CHOICES or None,
                    help="the full EPP's picker")
    ap.add_argument("--server", default=None, choices=SERVER_CHOICES or None,
                    help="the full EPP's gRPC transport (default: EppSettings' default)")
    ap.add_argument("--prompt-bytes", default="200", help="comma-separated prompt sizes in bytes (each a "
                    "full run of every variant; long prompts reach the picker in several HTTP/2 DATA frames)")
    ap.add_argument("--precise", action="store_true", help="also measure the precise-prefix profile (KV events, "
                    "requests tokenized as the engine would)")
    ap.add_argument("--shared-prefix", action="store_true", help="one long shared text + a question of its own "
                    "per request (the chat shape precise prefix routing is for)")
    ap.add_argument("--json", help="also write the results, ratios and targets to this JSON file")
    args = ap.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    sizes = [int(b) for b in args.prompt_bytes.split(",")]
    allowed = sorted(os.sched_getaffinity(0))  # read once: measure() pins this process to the gateway CPU
    docs = {}
    for size in sizes:
        code, docs[size] = measure(args, clients, size, allowed)
        if code:
            return code
    if args.json:
        Path(args.json).write_text(json.dumps(docs[sizes[0]] if len(sizes) == 1 else
                                              {"by_prompt_bytes": docs}, indent=2))
    return 0


def measure(args: argparse.Namespace, clients: list[int], prompt_bytes: int, allowed: list[int]) -> tuple[int, dict]:
    """Every variant at every client count with ``prompt_bytes`` prompts: (exit code, JSON doc)."""
    signal.signal(signal.SIGTERM, _sigterm)
    backend_cpu, gateway_cpu = {allowed[0]}, {allowed[1] if len(allowed) > 1 else allowed[0]}
    os.sched_setaffinity(0, gateway_cpu)  # the load generator; children inherit it
    run_dir = Path(tempfile.mkdtemp(prefix="inferstack-overhead-"))
    (backend_port,) = free_ports(1)
    backend = f"127.0.0.1:{backend_port}"
    server = args.server or EppSettings().server
    variants = (*VARIANTS, "gateway_precise") if args.precise else VARIANTS
    results: dict[str, list[dict]] = {v: [] for v in variants}
    failures: dict[str, str] = {}
    try:
        with contextlib.ExitStack() as backend_stack:
            backend_stack.enter_context(_process(
                "echo_backend", [sys.executable, str(ROOT / "gateway_echo_backend.py"), "--port", str(backend_port)],
                backend_cpu, run_dir, lambda: _http_ok(f"http://{backend}/health")))
            for variant in variants:
                try:
                    with contextlib.ExitStack() as stack:
                        port = _start_variant(variant, stack, backend, gateway_cpu, run_dir, args.picker, args.server)
                        for n in clients:
                            r = asyncio.run(_run(port, n, args.duration, prompt_bytes, args.shared_prefix))
                            results[variant].append(r)
                            print(f"{variant:15s} prompt={prompt_bytes}B clients={n:4d} rps={r['rps']:8.0f} p50={r['p50_ms']:.3f}ms "
                                  f"p99={r['p99_ms']:.3f}ms errors={r['errors']}", flush=True)
                except Exception as exc:  # reported below; the other variants' numbers are still worth having
                    failures[variant] = f"{type(exc).__name__}: {exc}"
                    print(f"{variant} failed (its processes are stopped): {failures[variant]}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"interrupted; every process this benchmark started is stopped (logs in {run_dir})", file=sys.stderr)
        return 130, {}
    summary = summarize(results)
    header = (f"Gateway overhead vs baselines ({prompt_bytes}-byte prompts, {args.duration:g} s per point; "
              f"full EPP picker {args.picker}, "
              f"transport {server}; backend on CPU {sorted(backend_cpu)}, Envoy + ext_proc servers + load "
              f"generator on CPU {sorted(gateway_cpu)}; logs in {run_dir}):")
    print("\n" + format_report(results, summary, header))
    for variant, error in failures.items():
        print(f"FAILED: {LABELS[variant]}: {error.splitlines()[0]}")
    doc = {"setup": {"duration_s": args.duration, "clients": clients, "prompt_bytes": prompt_bytes,
                     "picker": args.picker, "server": server, "backend_cpus": sorted(backend_cpu),
                     "gateway_cpus": sorted(gateway_cpu), "envoy": str(envoy_binary()), "run_dir": str(run_dir)},
           "labels": LABELS, "results": results, **summary, "failures": failures}
    return (1 if failures else 0), doc


if __name__ == "__main__":
    raise SystemExit(main())
