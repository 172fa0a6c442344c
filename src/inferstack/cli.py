"""The ``inferstack`` command line.

Each component registers its own subcommands (``register(subparsers)`` in its ``cli`` module),
so this file only wires them together and turns ``InferstackError`` into a clear message and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from inferstack.errors import InferstackError

__all__ = ["main", "build_parser"]

# One line per component that contributes commands.
_COMPONENT_CLIS = (
    "inferstack.envs.cli",  # setup
    "inferstack.models.cli",  # models list|prepare
    "inferstack.stack.cli",  # up, status, down
    "inferstack.gateway.cli",  # epp, gateway
    "inferstack.bench.cli",  # bench, report
    "inferstack.kube.cli",  # recommend, render
    "inferstack.autoscale.cli",  # autoscale simulate
    "inferstack.batch.cli",  # batch submit|list|status|cancel|results
    "inferstack.lora.cli",  # adapters train|load|unload|list
    "inferstack.spectune.cli",  # tune-spec
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferstack",
        description="Online LLM inference on vLLM + Envoy: serve, route, benchmark, render for GKE.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in _COMPONENT_CLIS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # One line per request from the health checker would drown the lifecycle lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except InferstackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
