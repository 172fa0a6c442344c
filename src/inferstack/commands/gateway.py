"""``inferstack epp`` (the endpoint picker alone, as in Kubernetes) and ``inferstack gateway``
(Envoy + EPP in the foreground in front of model servers someone else started)."""

from __future__ import annotations

import argparse
import logging
import signal
import time
from pathlib import Path

from inferstack.configfile import validate
from inferstack.gateway.settings import EppSettings, GatewaySettings, HoldSettings, load_epp_settings

__all__ = ["register"]

log = logging.getLogger(__name__)


def _epp(args: argparse.Namespace) -> int:
    from inferstack.gateway.epp import run_epp

    return run_epp(load_epp_settings(Path(args.config)))


def _gateway(args: argparse.Namespace) -> int:
    from inferstack.gateway.runtime import Gateway

    epp = load_epp_settings(Path(args.config)) if args.config else EppSettings()
    # a hold in the EPP file is the gateway's (Envoy's ext_proc timer is sized for it)
    hold = epp.hold
    update = {"grpc_port": args.epp_port, "metrics_port": args.epp_metrics_port, "hold": HoldSettings()}
    if args.auth_file:
        update["auth_file"] = Path(args.auth_file).absolute()
    epp = epp.model_copy(update=update)
    settings = validate(GatewaySettings, {"port": args.port, "admin_port": args.admin_port, "listen_host": args.host,
                                          "epp": epp.model_dump(), "hold": hold.model_dump(),
                                          "insecure": args.insecure}, "gateway flags")
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    gw = Gateway(settings, endpoints=endpoints, run_dir=Path(args.run_dir) if args.run_dir else None)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    gw.start()
    print(f"gateway on {gw.url}/v1 -> {', '.join(endpoints)} (logs in {gw.run_dir}); Ctrl-C stops it", flush=True)
    try:
        while not stop:
            gw.heal()  # a dead EPP or Envoy is restarted alone
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        gw.stop()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("epp", help="run the endpoint picker (Envoy ext_proc server)")
    p.add_argument("--config", required=True, help="EPP YAML (grpc_port, discovery, scheduler, ...)")
    p.set_defaults(func=_epp)

    g = subparsers.add_parser("gateway", help="run Envoy + EPP in front of running model servers")
    g.add_argument("--endpoints", required=True, help="comma-separated host:port of OpenAI-compatible servers")
    g.add_argument("--config", help="EPP YAML for the scheduler, objectives, rewrites, saturation")
    g.add_argument("--host", default="127.0.0.1", help="listener address (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8080, help="listener port (default 8080)")
    g.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port on 127.0.0.1 (default 9901)")
    g.add_argument("--epp-port", type=int, default=9002, help="EPP gRPC port (default 9002)")
    g.add_argument("--epp-metrics-port", type=int, default=9090, help="EPP /metrics port (default 9090)")
    g.add_argument("--run-dir", help="where configs and logs go (default: a new temp dir)")
    g.add_argument("--auth-file", help="API key file: every request needs Authorization: Bearer <key> "
                   "(see `inferstack keys add`)")
    g.add_argument("--insecure", action="store_true",
                   help="allow a --host beyond loopback without --auth-file (anyone who reaches it can use it)")
    g.set_defaults(func=_gateway)
